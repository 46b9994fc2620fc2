"""Role grants, each scoped to a part of the organisation, and the audit log of staff actions."""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass

from sqlmodel import Field, SQLModel, select

from storage.db import Database


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


async def active_grants(db: Database, resident_id: int) -> list[RoleGrant]:
    async with db.read() as session:
        query = select(RoleGrant).where(RoleGrant.resident_id == resident_id, RoleGrant.revoked_at.is_(None))
        return list((await session.exec(query)).all())


@dataclass(frozen=True)
class Scope:
    """What part of the organisation a resident may act on, by role (ids of buildings, grids, ...)."""

    grants: tuple[RoleGrant, ...]

    def ids(self, role: Role) -> set[int]:
        return {g.scope_id for g in self.grants if g.role == role.value and g.scope_id is not None}

    def has(self, role: Role) -> bool:
        return any(g.role == role.value for g in self.grants)

    @property
    def is_admin(self) -> bool:
        return self.has(Role.ADMIN)

    @property
    def is_staff(self) -> bool:
        return any(self.has(r) for r in (Role.COMMUNITY_STAFF, Role.DISTRICT_STAFF, Role.ADMIN))


async def scope_of(db: Database, resident_id: int) -> Scope:
    return Scope(tuple(await active_grants(db, resident_id)))
