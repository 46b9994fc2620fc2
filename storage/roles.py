"""Role grants, each scoped to a part of the organisation, and the audit log of staff actions."""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass

from sqlmodel import Field, SQLModel, col, select

from storage.db import Database
from storage.org import Building, unit_names


class Role(enum.StrEnum):
    BUILDING_LEADER = "building_leader"  # 楼片长, scope: building
    GRID_WORKER = "grid_worker"  # 网格员, scope: grid
    COMMUNITY_STAFF = "community_staff"  # 社区工作人员, scope: community
    DISTRICT_STAFF = "district_staff"  # 区级部门工作人员, scope: department
    UNIT_MEMBER = "unit_member"  # 单位成员, scope: department (the unit)
    ADMIN = "admin"  # 管理员, scope: district

    @property
    def label(self) -> str:
        return ROLE_LABELS[self]


ROLE_LABELS = {
    Role.BUILDING_LEADER: "楼片长",
    Role.GRID_WORKER: "网格员",
    Role.COMMUNITY_STAFF: "社区工作人员",
    Role.DISTRICT_STAFF: "区级部门工作人员",
    Role.UNIT_MEMBER: "单位成员",
    Role.ADMIN: "管理员",
}

# The kind of organisation unit each role's scope names.
ROLE_SCOPE = {
    Role.BUILDING_LEADER: "building",
    Role.GRID_WORKER: "grid",
    Role.COMMUNITY_STAFF: "community",
    Role.DISTRICT_STAFF: "department",
    Role.UNIT_MEMBER: "department",
    Role.ADMIN: "district",
}


class RoleGrant(SQLModel, table=True):
    __tablename__ = "role_grant"

    id: int | None = Field(default=None, primary_key=True)
    resident_id: int = Field(foreign_key="resident.id", index=True)
    role: str = Field(max_length=32)
    scope_type: str = Field(max_length=16)
    scope_id: int | None = None  # None only for the district-wide admin
    granted_by: str = Field(max_length=64)
    granted_at: dt.datetime
    revoked_at: dt.datetime | None = None


class AuditLog(SQLModel, table=True):
    """Every staff action: who, what, on which record, when. Rows are only ever added."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = Field(index=True)
    actor: str = Field(max_length=64)  # "resident:<id>" or "cli:<user>"
    action: str = Field(max_length=48, index=True)
    target_type: str = Field(default="", max_length=32)
    target_id: str = Field(default="", max_length=64)
    detail: str = Field(default="{}")  # JSON


def audit_entry(
    at: dt.datetime, actor: str, action: str, target_type: str = "", target_id: object = "", **detail
) -> AuditLog:
    """Build an audit row to add in the same transaction as the action it records."""
    return AuditLog(
        at=at,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        detail=json.dumps(detail, ensure_ascii=False, default=str),
    )


async def staff_resident_ids(session, community_id: int) -> list[int]:
    """The residents who staff this community now (inside the caller's transaction: whom it tells)."""
    query = select(RoleGrant.resident_id).where(
        RoleGrant.role == Role.COMMUNITY_STAFF.value,
        RoleGrant.scope_id == community_id,
        col(RoleGrant.revoked_at).is_(None),
    )
    return sorted(set((await session.exec(query)).all()))


async def active_grants(db: Database, resident_id: int) -> list[RoleGrant]:
    async with db.read() as session:
        query = select(RoleGrant).where(RoleGrant.resident_id == resident_id, RoleGrant.revoked_at.is_(None))
        # In the order granted: 我的角色 numbers them (PostgreSQL returned them in another order once in a while).
        return list((await session.exec(query.order_by(RoleGrant.id))).all())


# ---------------------------------------------------------------------------------------------------------------
# Granting and revoking roles is in storage/grants.py. The scope
# helpers other features use to keep each role inside its own part of the organisation:
#
#   buildings_led_by(db, rid)     ids of the buildings a 楼片长 leads
#   grids_of_worker(db, rid)      ids of the grids a 网格员 works
#   buildings_in_reach(db, rid)   buildings led + every building of the grids worked
#   communities_staffed(db, rid)  ids of the communities a 社区工作人员 staffs
#   Actor.is_admin                the district-wide admin (no scope; storage/actor.py)


class RoleError(ValueError):
    """A refused grant or revoke; `reason` is Chinese."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_role(text: str) -> Role:
    """"community_staff" or its label "社区工作人员"."""
    wanted = (text or "").strip()
    for role in Role:
        if wanted.lower() == role.value or wanted == role.label:
            return role
    names = "、".join(f"{r.value}（{r.label}）" for r in Role)
    raise RoleError(f"没有角色「{wanted}」。可用角色：{names}")


async def _scope_ids(db: Database, resident_id: int, *roles: Role) -> set[int]:
    wanted = [r.value for r in roles]
    query = select(RoleGrant.scope_id).where(
        RoleGrant.resident_id == resident_id,
        col(RoleGrant.role).in_(wanted),
        col(RoleGrant.revoked_at).is_(None),
        col(RoleGrant.scope_id).is_not(None),
    )
    async with db.read() as s:
        return set((await s.exec(query)).all())


async def buildings_led_by(db: Database, resident_id: int) -> set[int]:
    return await _scope_ids(db, resident_id, Role.BUILDING_LEADER)


async def grids_of_worker(db: Database, resident_id: int) -> set[int]:
    return await _scope_ids(db, resident_id, Role.GRID_WORKER)


async def communities_staffed(db: Database, resident_id: int) -> set[int]:
    return await _scope_ids(db, resident_id, Role.COMMUNITY_STAFF)


async def buildings_in_reach(db: Database, resident_id: int) -> set[int]:
    """Buildings a 楼片长 leads plus every building in the grids a 网格员 works."""
    led = await buildings_led_by(db, resident_id)
    grids = await grids_of_worker(db, resident_id)
    if grids:
        async with db.read() as s:
            led |= set((await s.exec(select(Building.id).where(col(Building.grid_id).in_(sorted(grids))))).all())
    return led


REACH_LIMIT = 200  # at most this many buildings in a 楼片长's / 网格员's reach are loaded


async def buildings_in_reach_of(db: Database, resident_id: int, limit: int = REACH_LIMIT) -> list[Building]:
    """The buildings a 楼片长 leads plus every building of the grids a 网格员 works, in id order, at most `limit`.

    The reach itself is `buildings_in_reach` (active grants only); this loads the rows, so a
    leader's flows show and search only their own buildings.
    """
    ids = await buildings_in_reach(db, resident_id)
    if not ids:
        return []
    async with db.read() as s:
        query = select(Building).where(col(Building.id).in_(sorted(ids))).order_by(Building.id).limit(limit)
        return list((await s.exec(query)).all())



@dataclass(frozen=True)
class GrantView:
    """A grant as people read it: 社区工作人员 · 大海阳社区（C0101）."""

    grant: RoleGrant
    role_label: str
    scope_text: str


async def describe_grants(db: Database, grants: list[RoleGrant]) -> list[GrantView]:
    names: dict[str, dict[int, tuple[str, str]]] = {}
    for scope_type in {g.scope_type for g in grants}:
        ids = {g.scope_id for g in grants if g.scope_type == scope_type and g.scope_id is not None}
        names[scope_type] = await unit_names(db, scope_type, ids)
    views = []
    for g in grants:
        label = Role(g.role).label if g.role in Role._value2member_map_ else g.role
        if g.scope_id is None:
            text = "全区"
        else:
            code, name = names.get(g.scope_type, {}).get(g.scope_id, ("?", "已删除"))
            text = f"{name}（{code}）"
        views.append(GrantView(g, label, text))
    return views


GRANT_LIST_LIMIT = 200


async def list_active_grants(db: Database, role: Role | None = None, limit: int = GRANT_LIST_LIMIT) -> list[RoleGrant]:
    """Active grants, oldest first, at most `limit` (the CLI pages with --limit)."""
    query = select(RoleGrant).where(col(RoleGrant.revoked_at).is_(None))
    if role is not None:
        query = query.where(RoleGrant.role == role.value)
    async with db.read() as s:
        return list((await s.exec(query.order_by(RoleGrant.id).limit(limit))).all())


AUDIT_PAGE = 50


async def audit_page(
    db: Database, *, action: str | None = None, before_id: int | None = None, limit: int = AUDIT_PAGE
) -> tuple[list[AuditLog], int | None]:
    """The audit log newest first, keyed by id (stable while rows are added), optionally only actions starting with
    `action`; returns the page and the id to continue before (None on the last page). Callers check Can.READ_AUDIT."""
    limit = max(1, min(limit, 200))
    query = select(AuditLog)
    if action:
        query = query.where(col(AuditLog.action).startswith(action, autoescape=True))
    if before_id is not None:
        query = query.where(col(AuditLog.id) < before_id)
    async with db.read() as s:
        rows = list((await s.exec(query.order_by(col(AuditLog.id).desc()).limit(limit + 1))).all())
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)
