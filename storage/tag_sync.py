"""Residents whose WeChat user tags (which custom menu they see) must be brought in line with their roles.

A role grant or revoke queues its resident here in its own transaction, so the change at WeChat is never lost
and never holds up the grant: WeChat being down costs a delay, not a refused grant. The bot drains the queue
(`bot/menu.sync_tags`: the scheduler's `menu.sync_tags` job, `steward menu sync-tags`); which tag a person
should carry is `storage/menu_tags.py`. This module sits below `storage/roles.py`, which calls it.
"""

from __future__ import annotations

import datetime as dt

from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.db import insert_for


class TagSync(SQLModel, table=True):
    """One row per resident waiting for a tag sync. `version` grows with every queueing, so a sync that read
    version 3 removes the row only if no grant came in meanwhile (that one is synced on the next run)."""

    __tablename__ = "wechat_tag_sync"

    resident_id: int = Field(foreign_key="resident.id", primary_key=True, sa_column_kwargs={"autoincrement": False})
    version: int = 1
    queued_at: dt.datetime


async def queue_tag_sync(session: AsyncSession, resident_id: int, now: dt.datetime) -> None:
    """Queue (or re-queue) a resident's tag sync inside the caller's transaction."""
    table = TagSync.__table__
    stmt = insert_for(session, TagSync).values(resident_id=resident_id, version=1, queued_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=["resident_id"], set_={"version": table.c.version + 1, "queued_at": now}
    )
    await session.exec(stmt)
