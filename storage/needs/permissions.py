"""Loading a need, locked, for an action its state and the actor's permissions allow (the rules themselves are
in storage/policy.py), and how the actor is named on the need's timeline."""

from __future__ import annotations

from sqlmodel import select

from storage.actor import Actor
from storage.needs.model import NOT_TRIAGED, Need, NeedError, NeedStatus, normalise_ticket
from storage.needs.transitions import check, refusal
from storage.org import Department
from storage.policy import Can
from storage.policy import refusal as policy_refusal
from storage.roles import Role


def management_refusal(actor: Actor, need: Need, action: str) -> str | None:
    """Why a community-staff `action` ("reclassify", "assign", "merge", …) cannot start on this need, or None.

    Guided flows ask before their first question, so nobody walks three steps to a refusal; the operation
    itself checks again under the row lock."""
    if (why := policy_refusal(actor, Can.MANAGE_NEED, need)) is not None:
        return why
    if action == "assign" and need.state is NeedStatus.REPORTED:
        return NOT_TRIAGED.format(ticket=need.ticket)
    return refusal(need, action)


async def actor_label(s, actor: Actor, need: Need) -> str:
    """How the timeline residents read names the actor: by role, never by person."""
    if actor.is_admin:
        return "管理员"
    if need.community_id in actor.ids(Role.COMMUNITY_STAFF):
        return "社区工作人员"
    if need.department_id is not None and need.department_id in actor.ids(Role.DISTRICT_STAFF) | actor.ids(
        Role.UNIT_MEMBER
    ):
        dept = await s.get(Department, need.department_id)
        return dept.name if dept else "区级部门"
    if need.unit_id is not None and need.unit_id in actor.ids(Role.UNIT_MEMBER):
        unit = await s.get(Department, need.unit_id)
        return unit.name[:32] if unit else "承办单位"  # the label column holds 32
    if need.grid_id is not None and need.grid_id in actor.ids(Role.GRID_WORKER):
        return "网格员"
    return "工作人员"


async def load_need(s, ticket: str, lock: bool = True) -> Need:
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


async def load_for(s, actor: Actor, can: Can, ticket: str, action: str) -> Need:
    """The need, locked, when `actor` holds `can` on it and its status allows `action`."""
    need = await load_need(s, ticket)
    if (why := policy_refusal(actor, can, need)) is not None:
        raise NeedError(why)
    check(need, action)
    return need


