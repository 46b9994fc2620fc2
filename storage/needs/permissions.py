"""Who may do what to a need (by the actor's role scope), how the actor is named on the timeline, and loading a
need, locked, for an action its state and the actor's scope allow."""

from __future__ import annotations

from sqlmodel import select

from storage.needs.model import NOT_TRIAGED, Need, NeedError, NeedStatus, normalise_ticket
from storage.needs.transitions import check, refusal
from storage.org import Department
from storage.roles import Role, Scope


def can_manage(scope: Scope, need: Need) -> bool:
    """Triage, assign, escalate, merge, reject: the need's community staff (or an admin)."""
    return scope.is_admin or need.community_id in scope.ids(Role.COMMUNITY_STAFF)


def management_refusal(scope: Scope, need: Need, action: str) -> str | None:
    """Why a community-staff `action` ("reclassify", "assign", "merge", …) cannot start on this need, or None.

    Guided flows ask before their first question, so nobody walks three steps to a refusal; the operation
    itself checks again under the row lock."""
    if not can_manage(scope, need):
        return f"诉求 {need.ticket} 不在您负责的社区。"
    if action == "assign" and need.state is NeedStatus.REPORTED:
        return NOT_TRIAGED.format(ticket=need.ticket)
    return refusal(need, action)


def can_handle(scope: Scope, need: Need, actor_id: int) -> bool:
    """Post progress and resolve: managers, the assignee, or the department it was escalated to."""
    return (
        can_manage(scope, need)
        or (need.assignee_id is not None and need.assignee_id == actor_id)
        or (need.department_id is not None and need.department_id in scope.ids(Role.DISTRICT_STAFF))
    )


def can_oversee(scope: Scope, need: Need, actor_id: int) -> bool:
    """See the staff view: handlers plus the building's leaders and the grid's workers."""
    return (
        can_handle(scope, need, actor_id)
        or (need.building_id is not None and need.building_id in scope.ids(Role.BUILDING_LEADER))
        or (need.grid_id is not None and need.grid_id in scope.ids(Role.GRID_WORKER))
    )


async def _actor_label(s, scope: Scope, need: Need) -> str:
    if scope.is_admin:
        return "管理员"
    if need.community_id in scope.ids(Role.COMMUNITY_STAFF):
        return "社区工作人员"
    if need.department_id is not None and need.department_id in scope.ids(Role.DISTRICT_STAFF):
        dept = await s.get(Department, need.department_id)
        return dept.name if dept else "区级部门"
    if need.grid_id is not None and need.grid_id in scope.ids(Role.GRID_WORKER):
        return "网格员"
    return "工作人员"


def _actor(resident_id: int | None) -> str:
    """The audit log's actor."""
    return f"resident:{resident_id}" if resident_id else "system"


async def _load(s, ticket: str, lock: bool = True) -> Need:
    normal = normalise_ticket(ticket)
    if normal is None:
        raise NeedError(f"「{ticket}」不是有效的诉求编号，编号形如 20261127-0007。")
    query = select(Need).where(Need.ticket == normal)
    if lock:
        query = query.with_for_update()
    need = (await s.exec(query)).first()
    if need is None:
        raise NeedError(f"没有找到编号为 {normal} 的诉求，请核对编号。")
    return need


async def _load_managed(s, scope: Scope, ticket: str, action: str) -> Need:
    """The need, locked, for a community-staff action (`can_manage`) its status allows."""
    need = await _load(s, ticket)
    if not can_manage(scope, need):
        raise NeedError(f"诉求 {need.ticket} 不在您负责的社区。")
    check(need, action)
    return need


async def _load_handled(s, scope: Scope, actor_id: int, ticket: str, action: str) -> Need:
    """The need, locked, for a handler's action (`can_handle`) its status allows."""
    need = await _load(s, ticket)
    if not can_handle(scope, need, actor_id):
        raise NeedError(f"诉求 {need.ticket} 不在您负责的范围内。")
    check(need, action)
    return need
