"""Residents: everyone who talks to the account, bound or not, keyed by openid."""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Index,
    String,
    UniqueConstraint,
    bindparam,
    column,
    func,
    literal,
    literal_column,
    or_,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel, col, select

from storage.db import Coalesced, Database, watch
from storage.kv import Held, KeyValueStore, fetched


class Resident(SQLModel, table=True):
    # A place's residents in id order (0030_resident_place_ids): a broadcast's batches go on from their cursor by
    # reading the index from there, not the whole community again for each batch of 500 (storage.broadcast).
    __table_args__ = (Index("ix_resident_community_ids", "community_id", "id"),
                      Index("ix_resident_building_ids", "building_id", "id"))

    id: int | None = Field(default=None, primary_key=True)
    openid: str = Field(max_length=64, unique=True)
    name: str | None = Field(default=None, max_length=32)
    phone: str | None = Field(default=None, max_length=20, index=True)
    community_id: int | None = Field(default=None, foreign_key="community.id")
    building_id: int | None = Field(default=None, foreign_key="building.id")
    room: str | None = Field(default=None, max_length=16)
    subscribed: bool = Field(default=True)
    # Opt-in to consultation (阳光17议) notices; residents switch it in 我的信息. Column added by 0003_org, with
    # a server default so existing rows got it (declared here too, so the model matches the migrated schema).
    notify_consultation: bool = Field(default=True, sa_column_kwargs={"server_default": true()})
    bound_at: dt.datetime | None = None
    # Start of WeChat's 48-hour customer-service window: the resident's latest message.
    last_contact_at: dt.datetime | None = Field(default=None, index=True)
    created_at: dt.datetime

    @property
    def is_bound(self) -> bool:
        return self.bound_at is not None


class RosterEntry(SQLModel, table=True):
    """住户花名册: a resident the community registered (`steward import residents`), perhaps not on WeChat yet.

    Keyed by phone + building. When someone binds with the same phone and building, the entry is linked to
    their Resident row (resident_id), which tells staff the WeChat user is the person the community knows.
    """

    __tablename__ = "resident_roster"
    __table_args__ = (UniqueConstraint("phone", "building_id", name="uq_roster_phone_building"),)

    id: int | None = Field(default=None, primary_key=True)
    phone: str = Field(max_length=20, index=True)
    name: str = Field(max_length=32)
    building_id: int = Field(foreign_key="building.id", index=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    room: str = Field(max_length=16)
    resident_id: int | None = Field(default=None, foreign_key="resident.id", index=True)
    imported_at: dt.datetime
    linked_at: dt.datetime | None = None


def mask_phone(phone: str | None) -> str:
    """138****5678: the only way a phone number is shown in a reply or a log line."""
    if not phone:
        return "未填写"
    if len(phone) < 7:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


# A contact refresh writes at most this often per resident: a chatty resident must not cost a DB
# write per message, and a minute's slack is nothing against a 48-hour window.
CONTACT_REFRESH = dt.timedelta(seconds=60)


async def find_resident(db: Database, openid: str) -> Resident | None:
    async with db.read() as session:
        return (await session.exec(select(Resident).where(Resident.openid == openid))).first()


async def touch_resident(db: Database, openid: str, now: dt.datetime, resident: Resident | None = None) -> Resident:
    """Record that the resident just wrote to us (opens the 48-hour window); create them on first contact."""
    if resident is None:
        resident = await find_resident(db, openid)
    if resident is not None and _contact_is_fresh(resident, now):
        return resident
    return (await _write_contact(db, openid, now))[0]


async def _write_contact(db: Database, openid: str, now: dt.datetime) -> tuple[Resident, bool]:
    """The contact written (the row made on first contact); whether the row is new."""
    row, created = await _write_contact_row(db, openid, now)
    return Resident(**{c.name: getattr(row, c.name) for c in _RESIDENT.columns}), created


async def _write_contact_row(db: Database, openid: str, now: dt.datetime, *, unless_fresh: bool = False):
    """The contact as one upsert: on PostgreSQL one statement, its own transaction; on SQLite with the other
    writes queued at that moment. The row and whether this made it. `unless_fresh` (SQLite only, which looks
    first): a row whose contact is fresh is given back as it is, unwritten; PostgreSQL writes only a due contact
    through `_contacts` (`_write_due_contact` picks)."""
    if unless_fresh and not db.is_sqlite:
        raise ValueError("on PostgreSQL a contact written only if due goes through _contacts")
    new = Resident(openid=openid, created_at=now, last_contact_at=now)
    values = {c.name: getattr(new, c.name) for c in _RESIDENT.columns if c.name != "id"}

    def write(connection):
        upsert = _contact_upsert(connection.dialect.name)
        if connection.dialect.name == "postgresql":
            row = connection.execute(upsert, values).one()
            return row, row.created
        # SQLite: the one writer holds the file, so looking first is exact.
        known = connection.execute(select(_RESIDENT).where(_RESIDENT.c.openid == openid)).first()
        if known is not None and unless_fresh and _contact_is_fresh(known, now):
            return known, False
        return connection.execute(upsert, values).one(), known is None

    return await db.write_at_once(write, one_statement=True)


_RESIDENT = Resident.__table__


def _contact_written(statement):
    """Only followers can write to an Official Account: someone imported before they followed, or whose follow
    event was missed, is subscribed the moment they write."""
    return {"last_contact_at": statement.excluded.last_contact_at, "subscribed": true()}


@functools.cache
def _contact_upsert(dialect: str):
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = make(_RESIDENT).values({c.name: bindparam(c.name, type_=c.type)
                                        for c in _RESIDENT.columns if c.name != "id"})
    statement = statement.on_conflict_do_update(index_elements=["openid"], set_=_contact_written(statement))
    returning = list(_RESIDENT.columns)
    if dialect == "postgresql":
        returning.append(_CREATED)
    return statement.returning(*returning)


# PostgreSQL: xmax is 0 on a row the statement inserted, the updating transaction's id on one it updated.
_CREATED = literal_column("(xmax = 0)", Boolean).label("created")


@functools.cache
def _contacts_upsert():
    """PostgreSQL: many contacts in one statement, one shape whatever their number (the openids and times go as
    two arrays): a row whose contact is fresh is left as it is and not returned; a new row says so (`created`)."""
    arrays = func.unnest(bindparam("openids", type_=postgresql.ARRAY(String)),
                         bindparam("times", type_=postgresql.ARRAY(DateTime(timezone=True))))
    given = arrays.table_valued(column("openid", String), column("at", DateTime(timezone=True))).render_derived("given")
    blank = Resident(openid="", created_at=dt.datetime.now(dt.UTC))
    given_names = ("id", "openid", "last_contact_at", "created_at")
    constant = {c.name: literal(getattr(blank, c.name), c.type) for c in _RESIDENT.columns
                if c.name not in given_names and getattr(blank, c.name) is not None}
    rows = select(given.c.openid, given.c.at, given.c.at, *constant.values())
    statement = postgresql.insert(_RESIDENT).from_select(["openid", "last_contact_at", "created_at", *constant], rows)
    last = _RESIDENT.c.last_contact_at
    due = or_(last.is_(None), last < statement.excluded.last_contact_at - CONTACT_REFRESH,
              _RESIDENT.c.subscribed.is_(False))
    statement = statement.on_conflict_do_update(index_elements=["openid"], set_=_contact_written(statement), where=due)
    return statement.returning(*_RESIDENT.columns, _CREATED)


def _write_contacts(connection, times: dict[str, dt.datetime]) -> dict[str, Any]:
    openids = list(times)
    rows = connection.execute(_contacts_upsert(), {"openids": openids, "times": [times[o] for o in openids]})
    return {row.openid: row for row in rows}


async def _write_due_contact(db: Database, openid: str, now: dt.datetime):
    """The contact written only if due (or the row made on first contact): the row and whether this made it. On
    PostgreSQL the contacts due at one moment go in one statement (`_contacts`), and a row whose contact is fresh
    comes back as (None, False); on SQLite the one writer looks first and gives that row back unwritten."""
    if db.is_sqlite:
        return await _write_contact_row(db, openid, now, unless_fresh=True)
    row = await _contacts(db).write(openid, now)
    return row, bool(row is not None and row.created)


def _contacts(db: Database) -> Coalesced:
    """This database's contact writes that go together (PostgreSQL)."""
    kept = db.memo.get("contacts")
    if kept is None:
        kept = db.memo["contacts"] = Coalesced(db, _write_contacts, merge=max)
    return kept


def _contact_is_fresh(resident: Resident | ResidentSnapshot, now: dt.datetime) -> bool:
    return bool(resident.subscribed and resident.last_contact_at and now - resident.last_contact_at < CONTACT_REFRESH)


watch("resident", lambda row: row.openid)


@dataclass(slots=True)
class ResidentSnapshot:
    """A resident's row as read at the start of a message: what handlers see as `ctx.resident`.

    A plain copy (not an ORM object) so the hot path can keep it in the key-value store cheaply; change a
    resident only through the operations in this module (binding: `storage.claims.bind_resident`).
    """

    id: int | None
    openid: str
    name: str | None = None
    phone: str | None = None
    community_id: int | None = None
    building_id: int | None = None
    room: str | None = None
    subscribed: bool = True
    notify_consultation: bool = True
    bound_at: dt.datetime | None = None
    last_contact_at: dt.datetime | None = None
    created_at: dt.datetime | None = None
    # Made by this very message: nothing (a role grant, a claim) can refer to the row yet. Never cached.
    _first_contact: bool = False

    _TIMES = ("bound_at", "last_contact_at", "created_at")

    @property
    def is_bound(self) -> bool:
        return self.bound_at is not None

    @classmethod
    def of(cls, row: Resident) -> ResidentSnapshot:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__ if not name.startswith("_")})

    def to_json(self) -> str:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__ if not name.startswith("_")}
        for name in self._TIMES:
            if values[name] is not None:
                values[name] = values[name].isoformat()
        return json.dumps(values, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str) -> ResidentSnapshot:
        values = json.loads(raw)
        for name in cls._TIMES:
            if values.get(name):
                values[name] = dt.datetime.fromisoformat(values[name])
        return cls(**values)


def made_by_this_message(resident: Resident | ResidentSnapshot) -> bool:
    """The row was made by the message being handled: nothing (a role grant, a claim, a waiting notice) can refer
    to it yet, so none need be looked for."""
    return bool(getattr(resident, "_first_contact", False))


class ResidentDirectory:
    """Residents by openid for the gateway's hot path, with a short-lived copy in the key-value store.

    Every message needs its sender's row; reading it from the database each time made the database the
    bottleneck. A copy lives `TTL` seconds in the store (Redis: shared by all workers) and is dropped as
    soon as any transaction that changed the row commits (Database.on_commit), so a binding or a staff
    edit is seen at the next message. The TTL bounds staleness from writers in other processes without a
    store (e.g. a CLI import on the embedded defaults).
    """

    TTL = 60.0

    def __init__(self, db: Database, kv: KeyValueStore) -> None:
        self.db = db
        self.kv = kv
        db.on_commit.append(self._forget)
        # Copies to be written as a resident's lock goes (`_keep`), by key: a commit that changes the row before
        # then takes its copy back, or the release would put the old row back after the commit dropped it.
        self._kept: weakref.WeakValueDictionary[str, Held] = weakref.WeakValueDictionary()

    @staticmethod
    def key(openid: str) -> str:
        return "resident:" + openid

    async def _forget(self, changes: dict[str, set[str]]) -> None:
        openids = changes.get("resident")
        if openids:
            for key in map(self.key, openids):
                if (held := self._kept.pop(key, None)) is not None:
                    held.cached.pop(key, None)
            await self.kv.delete(*(self.key(o) for o in openids))

    async def _keep(self, openid: str, snapshot: ResidentSnapshot, ahead: Mapping[str, str | None] | None) -> None:
        """Copy the row to the store: with the resident's lock as it goes when the caller holds it (no round trip
        of its own; a first contact, or a contact due, is three round trips otherwise), else now. Another
        process's commit in between is seen when this copy expires (TTL), as with one written at once."""
        key, value = self.key(openid), snapshot.to_json()
        if isinstance(ahead, Held) and not ahead.released:
            ahead.cache(key, value, ttl=self.TTL)
            self._kept[key] = ahead
        else:
            await self.kv.set(key, value, ttl=self.TTL)

    async def get(self, openid: str, ahead: Mapping[str, str | None] | None = None) -> ResidentSnapshot | None:
        """`ahead`: keys already read (storage.kv's `lock(read=...)`), when it holds this one."""
        cached = await fetched(self.kv, self.key(openid), ahead)
        if cached:
            return ResidentSnapshot.from_json(cached)
        row = await find_resident(self.db, openid)
        if row is None:
            return None
        snapshot = ResidentSnapshot.of(row)
        await self._keep(openid, snapshot, ahead)
        return snapshot

    async def touch(self, openid: str, now: dt.datetime,
                    ahead: Mapping[str, str | None] | None = None) -> ResidentSnapshot:
        """The sender of a message, created on first contact; the 48-hour window's start refreshed."""
        cached = await fetched(self.kv, self.key(openid), ahead)
        if cached:
            known = ResidentSnapshot.from_json(cached)
            if _contact_is_fresh(known, now):
                return known
        # Not cached, or the contact is due: one upsert, which writes only a contact that is due and returns the
        # row. On PostgreSQL the contacts due at that moment go in one statement (a thousand new followers at
        # once are a few statements); on SQLite each is one statement of the writer's queued transaction.
        row, created = await _write_due_contact(self.db, openid, now)
        if row is None:  # PostgreSQL: the row was there, contact fresh: nothing written, nothing returned
            row = await find_resident(self.db, openid)
        snapshot = ResidentSnapshot.of(row)
        await self._keep(openid, snapshot, ahead)
        snapshot._first_contact = created
        return snapshot


async def set_subscribed(db: Database, openid: str, subscribed: bool, now: dt.datetime) -> Resident:
    async with db.write() as session:
        row = (await session.exec(select(Resident).where(Resident.openid == openid))).first()
        if row is None:
            row = Resident(openid=openid, created_at=now, last_contact_at=now)
        row.subscribed = subscribed
        session.add(row)
    return row


# ---------------------------------------------------------------------------------------------------------------
# Binding: validation and the operations that change a resident's details.


class BindingError(ValueError):
    """A refused binding or change; `reason` is Chinese and shown to the resident as the hint."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_PHONE = re.compile(r"1[3-9]\d{9}")
# 301 / 301室 / 2单元301 / 1-2-301 / A-1201: digits and letters in up to three dash-separated parts.
_ROOM = re.compile(r"(\d{1,3}单元)?[0-9A-Za-z]{1,6}(-[0-9A-Za-z]{1,6}){0,2}")
ROOM_MAX = 16
NAME_MAX = 20


def clean_phone(text: str) -> str:
    """A mainland mobile number (11 digits, 1[3-9]…); spaces, dashes and +86 are dropped."""
    digits = re.sub(r"[\s\-－—()（）]", "", text or "")
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    if not _PHONE.fullmatch(digits):
        raise BindingError("手机号格式不对，请输入11位手机号，如 13800138000。")
    return digits


def clean_room(text: str) -> str:
    """A room as residents write it: 301, 301室, 2单元301, 1-2-301."""
    room = re.sub(r"\s", "", text or "").replace("－", "-").replace("—", "-")
    room = room.removesuffix("室").removesuffix("号")
    # A room has a number somewhere (A301, 1-2-301, 301); "abc" is a slip, and every need would carry it.
    if not room or len(room) > ROOM_MAX or not _ROOM.fullmatch(room) or not any(ch.isdigit() for ch in room):
        raise BindingError("房号格式不对，请照这样写：2单元301、1-2-301 或 301。")
    return room.upper()


def clean_name(text: str) -> str:
    """A person's name: 1 to 20 characters, not only digits, no line breaks or symbols of markup."""
    name = " ".join((text or "").split())
    if not name or len(name) > NAME_MAX:
        raise BindingError(f"姓名需为1到{NAME_MAX}个字，请重新输入。")
    if not any(ch.isalpha() for ch in name) or any(ch in name for ch in "<>{}[]\\/@#$%^&*=|"):
        # No letter at all (12345, 3-1-101, 。): a room or a slip, not a name; staff would call back "。".
        raise BindingError("姓名里不能只有数字或含特殊符号，请输入您的真实姓名。")
    return name


@dataclass(frozen=True)
class BindResult:
    resident: Resident
    on_roster: bool  # the community's roster (花名册) knows this phone at this building
    # Set when the binding would take over another account's phone or roster entry: nothing changed, the claim
    # (待核实, storage/claims.py) waits for the community's staff.
    claim: object | None = None
    adopted: int = 0  # needs a leader had filed for this phone, now theirs (storage.needs.adopt_filed_for)

    @property
    def pending(self) -> bool:
        return self.claim is not None


async def set_notify_consultation(db: Database, openid: str, on: bool) -> Resident:
    """Switch the resident's consultation (阳光17议) notices on or off."""
    async with db.write() as s:
        row = (await s.exec(select(Resident).where(Resident.openid == openid))).first()
        if row is None:
            raise BindingError("没有找到您的信息，请先回复「绑定」。")
        row.notify_consultation = on
        s.add(row)
    return row


LOOKUP_LIMIT = 10


@dataclass(frozen=True)
class ResidentRecord:
    """One hit of a staff lookup: a WeChat resident or a roster entry not (yet) on WeChat."""

    name: str
    phone: str
    community_id: int
    building_id: int
    room: str
    on_wechat: bool
    resident_id: int | None = None  # the WeChat resident (None: a roster entry only)


async def residents_by_phone(db: Database, phone: str, community_ids: set[int] | None) -> list[ResidentRecord]:
    """Bound residents and roster entries with this phone, limited to `community_ids` (None: everywhere).

    At most LOOKUP_LIMIT records; roster entries already linked to a shown resident are not repeated.
    """
    phone = clean_phone(phone)
    if community_ids is not None and not community_ids:
        return []
    bound = select(Resident).where(Resident.phone == phone, col(Resident.bound_at).is_not(None))
    roster = select(RosterEntry).where(RosterEntry.phone == phone)
    if community_ids is not None:
        bound = bound.where(col(Resident.community_id).in_(sorted(community_ids)))
        roster = roster.where(col(RosterEntry.community_id).in_(sorted(community_ids)))
    async with db.read() as s:
        people = (await s.exec(bound.order_by(Resident.id).limit(LOOKUP_LIMIT))).all()
        entries = (await s.exec(roster.order_by(RosterEntry.id).limit(LOOKUP_LIMIT))).all()
    found = [
        ResidentRecord(r.name or "", r.phone or "", r.community_id, r.building_id, r.room or "", True, r.id)
        for r in people
    ]
    shown = {r.id for r in people}
    found += [
        ResidentRecord(e.name, e.phone, e.community_id, e.building_id, e.room, e.resident_id is not None)
        for e in entries
        if e.resident_id not in shown
    ]
    return found[:LOOKUP_LIMIT]


async def find_residents_by_phone(db: Database, phone: str, limit: int = 5) -> list[Resident]:
    """Residents (WeChat users) with this phone; used by `steward role grant --phone`."""
    async with db.read() as s:
        query = select(Resident).where(Resident.phone == clean_phone(phone)).order_by(Resident.id).limit(limit)
        return list((await s.exec(query)).all())


async def get_resident(db: Database, resident_id: int) -> Resident | None:
    """The resident with this id (None when there is none); callers have already checked their scope."""
    async with db.read() as s:
        return await s.get(Resident, resident_id)


async def bound_residents_in_buildings(
    db: Database, building_ids: set[int] | list[int], *, phone: str | None = None, room: str | None = None,
    limit: int = 8,
) -> list[Resident]:
    """Bound residents of these buildings (a 楼片长's / 网格员's reach) with this phone and/or room, in id order.

    Only the given buildings are searched, so a leader finds no one outside their own; at most `limit` rows.
    A room (cleaned: `clean_room`) finds the same room written with its unit as well: 301 finds 301, 2单元301 and
    1-2-301 (each listed for the leader to pick), never 1301.
    """
    if not building_ids:
        return []
    query = select(Resident).where(
        col(Resident.building_id).in_(sorted(building_ids)), col(Resident.bound_at).is_not(None)
    )
    if phone is not None:
        query = query.where(Resident.phone == phone)
    if room is not None:
        # clean_room leaves only digits, letters, "-" and 单元: nothing LIKE reads as a wildcard.
        query = query.where(or_(Resident.room == room, col(Resident.room).like(f"%-{room}"),
                                col(Resident.room).like(f"%单元{room}")))
    async with db.read() as s:
        return list((await s.exec(query.order_by(Resident.id).limit(limit))).all())
