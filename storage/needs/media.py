"""The photos and voices that came with a need: copying them out of WeChat before its 3 days are up, and
finding them again for staff.

WeChat keeps a message's media (its MediaId) for 3 days. `fetch_due_media` (the scheduler's job
``needs.fetch_media``) copies each pending row into the media store soon after the need is submitted: rows are
claimed first (a short lease on ``next_try_at``, so two runs never fetch the same one), fetched outside any
transaction, then marked stored — or retried with a growing pause, or marked expired once WeChat's 3 days are
over or WeChat no longer knows the id. The fetching itself (HTTP) is the caller's `fetch`, from bot/.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from sqlmodel import col, select

from storage.db import Database
from storage.media import MediaStore, extension_for
from storage.needs.model import MEDIA_VALIDITY, MediaStatus, NeedMedia

log = logging.getLogger("steward.media")

FETCH_BATCH = 20  # rows one run copies at most
CLAIM_LEASE = dt.timedelta(minutes=5)  # a claimed row is tried again after this if its run died
FIRST_RETRY = dt.timedelta(minutes=1)
LONGEST_RETRY = dt.timedelta(hours=1)
MAX_MEDIA_BYTES = 20 * 1024 * 1024  # far above WeChat's own limits: anything larger is not a resident's photo

Fetch = Callable[[str], Awaitable[tuple[bytes, str]]]  # media id → (bytes, content type)


class MediaGone(Exception):
    """WeChat says the media id is unknown or expired: trying again cannot help (the fetcher raises it)."""


def media_link(public_base: str, token: str) -> str:
    """The link staff open: served by the bot (bot/app.py) only while the media is stored."""
    return f"{public_base.rstrip('/')}/media/{token}"


async def need_media(db: Database, need_id: int) -> list[NeedMedia]:
    """A need's photos, then its voices, each in the order the resident sent them."""
    async with db.read() as s:
        rows = await s.exec(select(NeedMedia).where(NeedMedia.need_id == need_id)
                            .order_by(NeedMedia.kind, NeedMedia.id))
        return list(rows.all())


async def stored_media(db: Database, token: str) -> NeedMedia | None:
    """The stored media behind a link's token; None for an unknown token or media not (or never) stored."""
    async with db.read() as s:
        row = (await s.exec(select(NeedMedia).where(NeedMedia.token == token))).first()
    return row if row is not None and row.status == MediaStatus.STORED and row.stored_key else None


async def _claim(db: Database, now: dt.datetime, limit: int) -> list[NeedMedia]:
    due = (
        select(NeedMedia)
        .where(NeedMedia.status == MediaStatus.PENDING.value, col(NeedMedia.next_try_at) <= now)
        .order_by(col(NeedMedia.next_try_at), col(NeedMedia.id))
        .limit(limit)
    )
    async with db.write() as s:
        if not db.is_sqlite:  # SQLite's BEGIN IMMEDIATE already serialises writers
            due = due.with_for_update(skip_locked=True)
        rows = list((await s.exec(due)).all())
        for row in rows:
            row.next_try_at = now + CLAIM_LEASE
            row.attempts += 1
            s.add(row)
    return rows


async def _finish(db: Database, row_id: int, **values) -> None:
    async with db.write() as s:
        row = await s.get(NeedMedia, row_id)
        if row is None:
            return
        for name, value in values.items():
            setattr(row, name, value)
        s.add(row)


def retry_after(attempts: int) -> dt.timedelta:
    """1, 2, 4 … minutes after each failed try, at most an hour."""
    return min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_RETRY)


async def fetch_due_media(db: Database, store: MediaStore, fetch: Fetch, now: dt.datetime,
                          limit: int = FETCH_BATCH) -> int:
    """Copy due media from WeChat into the store; the number of rows settled (stored or expired) this run."""
    settled = 0
    for row in await _claim(db, now, limit):
        expires = row.received_at + MEDIA_VALIDITY
        if now >= expires:
            await _finish(db, row.id, status=MediaStatus.EXPIRED.value, next_try_at=None,
                          error="超过微信3天有效期，未能保存")
            settled += 1
            continue
        try:
            data, content_type = await fetch(row.media_id)
            if len(data) > MAX_MEDIA_BYTES:
                raise MediaGone(f"{len(data)} bytes is more than {MAX_MEDIA_BYTES}")
            key = f"needs/{row.need_id}/{row.token}{extension_for(content_type)}"
            await store.put(key, data, content_type)
        except MediaGone as exc:
            log.warning("media %s of need %s is gone: %s", row.id, row.need_id, exc)
            await _finish(db, row.id, status=MediaStatus.EXPIRED.value, next_try_at=None,
                          error=f"微信已不提供该文件：{exc}"[:200])
            settled += 1
            continue
        except Exception as exc:  # WeChat busy, the network, the store: the same row is tried again later
            retry_at = now + retry_after(row.attempts)
            log.info("media %s of need %s not fetched (try %s), again at %s: %s", row.id, row.need_id,
                     row.attempts, retry_at.isoformat(), exc)
            # A retry past the 3 days would only find it gone: the next run after `expires` marks it expired.
            await _finish(db, row.id, next_try_at=min(retry_at, expires), error=str(exc)[:200])
            continue
        await _finish(db, row.id, status=MediaStatus.STORED.value, stored_key=key, content_type=content_type[:64],
                      size=len(data), stored_at=now, next_try_at=None, error=None)
        settled += 1
    return settled


def media_lines(rows: list[NeedMedia], public_base: str) -> list[str]:
    """What staff read about a need's photos and voices (the chat card and `steward needs show`): a link each
    once stored, else where it stands."""
    lines = []
    for kind, word, unit in (("image", "照片", "张"), ("voice", "语音", "段")):
        mine = [row for row in rows if row.kind == kind]
        if mine:
            lines.append(f"{word}{len(mine)}{unit}：")
            lines += [f"{n}. {_where(row, public_base)}" for n, row in enumerate(mine, 1)]
    return lines


def _where(row: NeedMedia, public_base: str) -> str:
    if row.status == MediaStatus.STORED:
        return media_link(public_base, row.token)
    if row.status == MediaStatus.EXPIRED:
        return "未能保存（微信只保留3天）"
    return "正在保存，稍后可看"
