"""Reading needs: one by ticket, pages by place/state/follower/lateness, the timeline, merge targets, the people
a need can be assigned to, display names."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, or_
from sqlmodel import col, select

from storage.db import Database
from storage.needs.model import (
    MERGE_CANDIDATES,
    OPEN_STATUSES,
    PAGE_SIZE,
    Need,
    NeedEvent,
    NeedFollower,
    NeedStatus,
    normalise_ticket,
)
from storage.org import Building, Community, Department, Grid
from storage.residents import Resident, mask_phone
from storage.roles import Role, RoleGrant


async def find_need(db: Database, ticket: str) -> Need | None:
    normal = normalise_ticket(ticket)
    if normal is None:
        return None
    async with db.read() as s:
        return (await s.exec(select(Need).where(Need.ticket == normal))).first()


AWAITING_RATING_LIMIT = 9  # the most offered in one "which need?" list


async def awaiting_rating(db: Database, resident_id: int, limit: int = AWAITING_RATING_LIMIT) -> list[Need]:
    """The resolved needs this resident rates (their own, or filed by them for someone unbound), newest first."""
    query = (
        select(Need)
        .where(
            Need.status == NeedStatus.RESOLVED.value,
            or_(Need.reporter_id == resident_id, (Need.reporter_id.is_(None)) & (Need.filed_by_id == resident_id)),
        )
        .order_by(Need.resolved_at.desc(), Need.id.desc())
        .limit(limit)
    )
    async with db.read() as s:
        return list((await s.exec(query)).all())


async def merge_candidates(db: Database, need: Need, limit: int = MERGE_CANDIDATES) -> list[Need]:
    """Open needs of the same sub-item in the same community, newest first: where a duplicate may be merged."""
    query = (
        select(Need)
        .where(
            Need.community_id == need.community_id,
            Need.item_code == need.item_code,
            Need.id != need.id,
            col(Need.status).in_([s.value for s in OPEN_STATUSES]),
        )
        .order_by(Need.id.desc())
        .limit(limit)
    )
    async with db.read() as s:
        return list((await s.exec(query)).all())


async def is_follower(db: Database, need_id: int, resident_id: int) -> bool:
    async with db.read() as s:
        row = await s.exec(
            select(NeedFollower.id).where(NeedFollower.need_id == need_id, NeedFollower.resident_id == resident_id)
        )
        return row.first() is not None


async def timeline(db: Database, need_id: int, *, public_only: bool = True, limit: int = 12) -> list[NeedEvent]:
    """The latest `limit` events, oldest first."""
    async with db.read() as s:
        query = select(NeedEvent).where(NeedEvent.need_id == need_id)
        if public_only:
            query = query.where(NeedEvent.public.is_(True))
        rows = list((await s.exec(query.order_by(NeedEvent.id.desc()).limit(limit))).all())
    return rows[::-1]


@dataclass(frozen=True)
class Page:
    needs: list[Need]
    total: int
    page: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


async def list_needs(
    db: Database,
    *,
    page: int = 1,
    size: int = PAGE_SIZE,
    statuses: frozenset[NeedStatus] | set[NeedStatus] | None = None,
    community_ids: set[int] | None = None,
    building_ids: set[int] | None = None,
    grid_ids: set[int] | None = None,
    department_ids: set[int] | None = None,
    follower_id: int | None = None,
    overdue_at: dt.datetime | None = None,
    newest_first: bool = False,
) -> Page:
    """One page of needs filtered by place, state, follower and lateness. Place filters are OR-ed (a leader's
    buildings or a grid worker's grids); None means no filter on it; an empty set matches nothing."""
    conditions = []
    if statuses is not None:
        conditions.append(col(Need.status).in_([s.value for s in statuses]))
    places = []
    for column, ids in ((Need.community_id, community_ids), (Need.building_id, building_ids),
                        (Need.grid_id, grid_ids), (Need.department_id, department_ids)):
        if ids is not None:
            places.append(col(column).in_(sorted(ids) or [-1]))
    if places:
        conditions.append(or_(*places))
    if follower_id is not None:
        conditions.append(col(Need.id).in_(select(NeedFollower.need_id).where(NeedFollower.resident_id == follower_id)))
    if overdue_at is not None:
        conditions.append(col(Need.status).in_([s.value for s in OPEN_STATUSES]))
        conditions.append(
            or_(Need.resolve_by < overdue_at, (Need.responded_at.is_(None)) & (Need.respond_by < overdue_at))
        )
    page = max(1, page)
    order = Need.id.desc() if newest_first else Need.id
    async with db.read() as s:
        total = (await s.exec(select(func.count()).select_from(Need).where(*conditions))).one()
        rows = await s.exec(select(Need).where(*conditions).order_by(order).offset((page - 1) * size).limit(size))
        return Page(list(rows.all()), int(total), page, size)


async def names_for(db: Database, needs: list[Need]) -> dict[str, dict[int, str]]:
    """Display names of the communities, buildings, departments and assignees of some needs."""
    ids = {
        "community": {n.community_id for n in needs},
        "building": {n.building_id for n in needs if n.building_id},
        "department": {n.department_id for n in needs if n.department_id},
        "resident": {n.assignee_id for n in needs if n.assignee_id},
    }
    out: dict[str, dict[int, str]] = {k: {} for k in ids}
    async with db.read() as s:
        for key, model in (("community", Community), ("building", Building), ("department", Department)):
            if ids[key]:
                rows = await s.exec(select(model).where(col(model.id).in_(ids[key])))
                out[key] = {r.id: r.name for r in rows.all()}
        if ids["resident"]:
            rows = await s.exec(select(Resident).where(col(Resident.id).in_(ids["resident"])))
            out["resident"] = {r.id: f"{r.name or '未留名'}({mask_phone(r.phone)})" for r in rows.all()}
    return out


async def assignable_people(db: Database, community_id: int) -> list[tuple[Resident, str]]:
    """Grid workers of the community's grids and the community's staff, with their role label."""
    async with db.read() as s:
        grid_ids = list((await s.exec(select(Grid.id).where(Grid.community_id == community_id))).all())
        query = (
            select(Resident, RoleGrant.role)
            .join(RoleGrant, RoleGrant.resident_id == Resident.id)
            .where(
                RoleGrant.revoked_at.is_(None),
                or_(
                    (RoleGrant.role == Role.COMMUNITY_STAFF.value) & (RoleGrant.scope_id == community_id),
                    (RoleGrant.role == Role.GRID_WORKER.value) & col(RoleGrant.scope_id).in_(grid_ids or [-1]),
                ),
            )
            .order_by(Resident.id)
            .limit(200)
        )
        rows = (await s.exec(query)).all()
    seen: dict[int, tuple[Resident, str]] = {}
    for resident, role in rows:
        seen.setdefault(resident.id, (resident, Role(role).label))
    return list(seen.values())
