"""Which WeChat user tag (and so which custom menu) each person carries, from their roles.

WeChat picks the conditional menu of the tag put on a user last when they carry several, so a person carries
exactly one of these tags: the first in MENU_TAGS that one of their roles belongs to (an admin who is also
社区工作人员 sees the admin menu; the chat `菜单` lists every role's entries anyway). 楼片长 and 网格员
share a tag because their staff entries are the same (代报, 楼栋诉求: their buildings, or their grids').
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete
from sqlmodel import col, select

from storage.db import Database
from storage.residents import Resident
from storage.roles import Role, RoleGrant
from storage.tag_sync import TagSync, queue_tag_sync


@dataclass(frozen=True)
class MenuTag:
    name: str  # the WeChat tag's name: at most 30 bytes
    roles: frozenset[Role]


MENU_TAGS: tuple[MenuTag, ...] = (
    MenuTag("管理员", frozenset({Role.ADMIN})),
    MenuTag("社区工作人员", frozenset({Role.COMMUNITY_STAFF})),
    MenuTag("区级部门", frozenset({Role.DISTRICT_STAFF})),
    MenuTag("楼片长网格员", frozenset({Role.BUILDING_LEADER, Role.GRID_WORKER})),
    MenuTag("单位成员", frozenset({Role.UNIT_MEMBER})),
)


def menu_tag_for(roles: Iterable[str]) -> MenuTag | None:
    """The one tag a person with these roles (values or Role members) carries; None for a resident."""
    held = {str(r) for r in roles}
    return next((tag for tag in MENU_TAGS if any(r.value in held for r in tag.roles)), None)


@dataclass(frozen=True)
class TagChange:
    """A queued resident: their openid, the tag they should carry (None: none of ours), the queue version read."""

    resident_id: int
    openid: str
    tag: str | None
    version: int


async def pending_tag_changes(db: Database, limit: int = 200) -> list[TagChange]:
    """The oldest `limit` queued residents and the tag each should carry now (from their active grants)."""
    async with db.read() as s:
        query = (
            select(TagSync, Resident.openid)
            .join(Resident, col(Resident.id) == TagSync.resident_id)
            .order_by(col(TagSync.queued_at), col(TagSync.resident_id))
            .limit(limit)
        )
        rows = (await s.exec(query)).all()
        ids = [row.resident_id for row, _ in rows]
        roles: dict[int, set[str]] = defaultdict(set)
        if ids:
            grants = select(RoleGrant.resident_id, RoleGrant.role).where(
                col(RoleGrant.resident_id).in_(ids), col(RoleGrant.revoked_at).is_(None)
            )
            for resident_id, role in (await s.exec(grants)).all():
                roles[resident_id].add(role)
    changes = []
    for row, openid in rows:
        tag = menu_tag_for(roles[row.resident_id])
        changes.append(TagChange(row.resident_id, openid, tag.name if tag else None, row.version))
    return changes


async def finish_tag_changes(db: Database, done: Iterable[TagChange]) -> int:
    """Take synced residents off the queue, unless they were queued again since they were read."""
    removed = 0
    async with db.write() as s:
        for change in done:
            result = await s.exec(
                delete(TagSync).where(
                    col(TagSync.resident_id) == change.resident_id, col(TagSync.version) == change.version
                )
            )
            removed += result.rowcount or 0
    return removed


async def queue_everyone_with_roles(db: Database, now: dt.datetime) -> int:
    """Queue every resident who holds or ever held a role (a first `steward menu push`, or a repair)."""
    async with db.write() as s:
        ids = sorted(set((await s.exec(select(RoleGrant.resident_id))).all()))
        for resident_id in ids:
            await queue_tag_sync(s, resident_id, now)
    return len(ids)
