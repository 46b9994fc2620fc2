"""Granting and revoking roles, each change with its audit row in the same transaction, and 居民查询 — the
operations on who holds which role (the tables and scope helpers are in storage/roles.py)."""

from __future__ import annotations

import datetime as dt

from sqlmodel import col, select

from storage.actor import Actor
from storage.db import Database
from storage.org import SCOPE_LABELS, SCOPE_TABLES
from storage.policy import Can, refusal
from storage.residents import Resident, ResidentRecord, clean_phone, mask_phone, residents_by_phone
from storage.roles import ROLE_SCOPE, Role, RoleError, RoleGrant, audit_entry
from storage.tag_sync import queue_tag_sync


async def _scope_id(session, role: Role, scope_code: str | None) -> int | None:
    scope_type = ROLE_SCOPE[role]
    code = (scope_code or "").strip().upper()
    if scope_type == "district":
        if code:
            raise RoleError(f"{role.label}的范围是全区，不需要填写范围编码。")
        return None
    label = SCOPE_LABELS[scope_type]
    if not code:
        raise RoleError(f"{role.label}需要指定{label}编码。")
    table = SCOPE_TABLES[scope_type]
    unit = (await session.exec(select(table).where(table.code == code))).first()
    if unit is None:
        raise RoleError(f"没有编码为 {code} 的{label}（{role.label}的范围必须是{label}）。")
    return unit.id


async def _locked_resident(session, resident_id: int):
    row = (await session.exec(select(Resident).where(Resident.id == resident_id).with_for_update())).first()
    if row is None:
        raise RoleError("没有找到这位居民。")
    return row


def _active(resident_id: int, role: Role, scope_id: int | None):
    query = select(RoleGrant).where(
        RoleGrant.resident_id == resident_id, RoleGrant.role == role.value, col(RoleGrant.revoked_at).is_(None)
    )
    return query.where(col(RoleGrant.scope_id).is_(None) if scope_id is None else RoleGrant.scope_id == scope_id)


async def grant_role(
    db: Database, resident_id: int, role: Role, scope_code: str | None, actor: Actor, now: dt.datetime
) -> RoleGrant:
    """Give a resident a role over a part of the organisation named by its code.

    The scope must be of the role's type (ROLE_SCOPE): a building code for 楼片长, a grid code for 网格员,
    a community code for 社区工作人员, a department code for 区级部门工作人员 and 单位成员, none for 管理员.
    Granting what the resident already has returns the existing grant and writes nothing (idempotent).
    """
    if (why := refusal(actor, Can.GRANT_ROLES)) is not None:
        raise RoleError(why)
    async with db.write() as s:
        await _locked_resident(s, resident_id)
        scope_id = await _scope_id(s, role, scope_code)
        existing = (await s.exec(_active(resident_id, role, scope_id))).first()
        if existing is not None:
            return existing
        row = RoleGrant(
            resident_id=resident_id,
            role=role.value,
            scope_type=ROLE_SCOPE[role],
            scope_id=scope_id,
            granted_by=actor.name[:64],
            granted_at=now,
        )
        s.add(row)
        await s.flush()
        s.add(audit_entry(now, actor.name, "role_grant", "resident", resident_id, role=role.value,
                          scope=scope_code or ""))
        await queue_tag_sync(s, resident_id, now)  # their WeChat menu tag follows, whenever WeChat answers
    return row


async def revoke_role(
    db: Database, resident_id: int, role: Role, scope_code: str | None, actor: Actor, now: dt.datetime
) -> RoleGrant:
    """End an active grant (the row stays, with revoked_at). Refuses when there is no such grant."""
    if (why := refusal(actor, Can.GRANT_ROLES)) is not None:
        raise RoleError(why)
    async with db.write() as s:
        await _locked_resident(s, resident_id)
        scope_id = await _scope_id(s, role, scope_code)
        row = (await s.exec(_active(resident_id, role, scope_id))).first()
        if row is None:
            raise RoleError(f"这位居民没有该范围的{role.label}角色，无需撤销。")
        row.revoked_at = now
        s.add(row)
        s.add(audit_entry(now, actor.name, "role_revoke", "resident", resident_id, role=role.value,
                          scope=scope_code or ""))
        await queue_tag_sync(s, resident_id, now)
    return row


async def lookup_residents(db: Database, actor: Actor, phone: str, now: dt.datetime) -> list[ResidentRecord]:
    """居民查询 by staff: residents with this phone in the communities the staff member serves (an admin:
    everywhere). Looking up personal data is a staff action, so it writes an audit row (phone masked)."""
    phone = clean_phone(phone)
    found = await residents_by_phone(db, phone, actor.communities)
    async with db.write() as s:
        s.add(audit_entry(now, actor.name, "resident_lookup", "phone", mask_phone(phone), found=len(found)))
    return found
