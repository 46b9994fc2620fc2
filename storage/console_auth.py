"""Signing in to the staff console without a password: a single-use link sent in chat, then an 8-hour session.

- A link (``ConsoleLink``) is 24 random bytes; only its SHA-256 is stored, so a leaked database holds no live
  link. It lives 10 minutes and is spent by the first use (a conditional UPDATE: two tabs racing for one link
  get one session). Link use is rate-limited per client address.
- A session lives in the key-value store (storage/kv.py, shared by every worker with Redis) for 8 hours, under
  the hash of its cookie value, with its own CSRF token. It names only the person: their grants are read again
  on every request (``actor_for``), so a revoked role ends the session at the next click.
- Who may sign in is one rule in storage/policy.py (``Can.USE_CONSOLE``); issuing and using a link are audited.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass

from sqlalchemy import update
from sqlmodel import Field, SQLModel, select

from storage.actor import Actor, actor_for
from storage.db import Database
from storage.kv import KeyValueStore
from storage.policy import Can, refusal
from storage.residents import Resident
from storage.roles import audit_entry

LINK_VALIDITY = dt.timedelta(minutes=10)
SESSION_SECONDS = 8 * 3600
# Link uses (good or bad) per client address: a street office's staff share one address behind its router at
# 9 a.m., and a 24-byte token is not guessed in any number of tries this size; the limit stops a flood.
LOGIN_TRIES = 60  # …
LOGIN_WINDOW = 600  # … in this many seconds
TOKEN_BYTES = 24


class ConsoleAuthError(Exception):
    """A refused sign-in; `reason` is the Chinese sentence to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConsoleLink(SQLModel, table=True):
    __tablename__ = "console_link"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    resident_id: int = Field(foreign_key="resident.id", index=True)
    created_by: str = Field(max_length=64)  # the audit actor who asked for it
    created_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None = None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_link(db: Database, actor: Actor, resident_id: int, now: dt.datetime) -> str:
    """A fresh sign-in token for `resident_id` (the person themselves in chat, or an operator for someone). The
    person must be allowed into the console by their own grants, whoever asks."""
    person = await actor_for(db, resident_id)
    if (why := refusal(person, Can.USE_CONSOLE)) is not None:
        raise ConsoleAuthError(why)
    if actor.resident_id != resident_id and not actor.is_admin:
        raise ConsoleAuthError("只能为自己申请登录链接。")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    async with db.write() as s:
        s.add(ConsoleLink(token_hash=_hash(token), resident_id=resident_id, created_by=actor.name[:64],
                          created_at=now, expires_at=now + LINK_VALIDITY))
        s.add(audit_entry(now, actor.name, "console.link", "resident", str(resident_id)))
    return token


async def login_allowed(kv: KeyValueStore, client: str) -> bool:
    """Count one link use from `client` (its address); False once it has used up its tries in the window."""
    return await kv.incr(f"console:login:{client}", LOGIN_WINDOW) <= LOGIN_TRIES


async def redeem_link(db: Database, token: str, now: dt.datetime) -> Actor:
    """Spend a link: the signed-in person as an Actor. ConsoleAuthError when the link is unknown, used, expired,
    or the person may no longer use the console."""
    gone = ConsoleAuthError("这个登录链接无效或已用过，请在微信里重新发送「后台」获取新链接。")
    if not token or len(token) > 64:
        raise gone
    async with db.write() as s:
        link = (await s.exec(select(ConsoleLink).where(ConsoleLink.token_hash == _hash(token)))).first()
        if link is None or link.used_at is not None:
            raise gone
        if link.expires_at <= now:
            raise ConsoleAuthError("这个登录链接已过期（10分钟内有效），请在微信里重新发送「后台」。")
        spent = await s.exec(update(ConsoleLink).where(ConsoleLink.id == link.id, ConsoleLink.used_at.is_(None))
                             .values(used_at=now))
        if spent.rowcount != 1:
            raise gone
        resident_id = link.resident_id
    actor = await actor_for(db, resident_id)
    if (why := refusal(actor, Can.USE_CONSOLE)) is not None:
        raise ConsoleAuthError(why)
    async with db.write() as s:
        s.add(audit_entry(now, actor.name, "console.login", "resident", str(resident_id)))
    return actor


@dataclass(frozen=True)
class ConsoleSession:
    sid: str  # the cookie's value (never stored as is)
    resident_id: int
    csrf: str
    started_at: str


def _session_key(sid: str) -> str:
    return f"console:session:{_hash(sid)}"


async def start_session(kv: KeyValueStore, resident_id: int, now: dt.datetime) -> ConsoleSession:
    session = ConsoleSession(secrets.token_urlsafe(32), resident_id, secrets.token_urlsafe(24), now.isoformat())
    value = json.dumps({"r": resident_id, "csrf": session.csrf, "at": session.started_at})
    await kv.set(_session_key(session.sid), value, ttl=SESSION_SECONDS)
    return session


async def load_session(kv: KeyValueStore, sid: str | None) -> ConsoleSession | None:
    if not sid or len(sid) > 128:
        return None
    raw = await kv.get(_session_key(sid))
    if raw is None:
        return None
    data = json.loads(raw)
    return ConsoleSession(sid, int(data["r"]), str(data["csrf"]), str(data.get("at", "")))


async def end_session(kv: KeyValueStore, sid: str) -> None:
    await kv.delete(_session_key(sid))


async def session_actor(db: Database, kv: KeyValueStore, session: ConsoleSession) -> Actor | None:
    """The session's person with their grants as they are now; None (and the session ended) when they may no
    longer use the console — a role revoked since sign-in ends it here."""
    actor = await actor_for(db, session.resident_id)
    if refusal(actor, Can.USE_CONSOLE) is not None:
        await end_session(kv, session.sid)
        return None
    return actor


async def person_name(db: Database, resident_id: int) -> str:
    async with db.read() as s:
        person = await s.get(Resident, resident_id)
    return (person.name if person and person.name else "") or "工作人员"


async def sign_out(db: Database, kv: KeyValueStore, actor: Actor, session: ConsoleSession, now: dt.datetime) -> None:
    await end_session(kv, session.sid)
    async with db.write() as s:
        s.add(audit_entry(now, actor.name, "console.logout", "resident", str(session.resident_id)))


async def record_export(db: Database, actor: Actor, kind: str, count: int, filters: str, now: dt.datetime,
                        what: str = "ledger") -> None:
    """An export leaves the system: who took how many rows of what (the ledger, the assessment, a monthly report
    file), under which filter (phones stay masked)."""
    async with db.write() as s:
        s.add(audit_entry(now, actor.name, "console.export", what, kind, count=count, filters=filters[:200]))
