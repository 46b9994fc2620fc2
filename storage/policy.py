"""Who may do what, written once. Every storage operation that acts for a person asks here; chat, the CLI and
the console pass the same Actor and get the same answer.

Each permission is one rule: who holds it (the test over the actor's grants and the target's place in the
organisation) and the Chinese sentence a refused person reads. Targets are read by attribute, so a rule needs
no import of the tables it guards:

    need      community_id, grid_id, building_id, department_id, unit_id, assignee_id, ticket
    building  id, grid_id, community_id, name
    community an id (int)
    unit      an id (int) or None (a project's unit)
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from storage.actor import Actor
from storage.roles import Role


class Can(enum.StrEnum):
    RUN_COMMUNITY = "community.run"  # sessions, topics, minutes, check-in, activities, points, rewards, projects,
    #                                  reviews, claims, deliveries, broadcasts of one community
    REACH_DISTRICT = "district.reach"  # broadcast to whole streets
    FILE_FOR = "need.file_for"  # 代报 for a resident of a building
    MANAGE_NEED = "need.manage"  # triage, reclassify, assign, escalate, merge, reject
    HANDLE_NEED = "need.handle"  # post progress, resolve
    SEE_NEED = "need.see"  # the staff view of a need
    GRANT_ROLES = "roles.grant"  # grant and revoke roles
    SEE_PHONE = "need.see_phone"  # the reporter's full phone number (every reveal audited)
    ACT_FOR_UNIT = "unit.act_for"  # claim a project for a unit, report its progress and completion
    FILE_PARTNER = "need.file_partner"  # hand a need over from another system (Open311 POST requests)
    READ_AUDIT = "audit.read"  # the audit log of every staff action
    USE_CONSOLE = "console.use"  # sign in to the staff web console (what it shows is still scoped by the rules above)
    ENTER_INDICATORS = "assess.enter"  # enter a community's yearly indicator values (the district's assessment)
    RUN_SURVEY = "survey.run"  # draw the district's satisfaction survey sample and invite it


def runs_community(actor: Actor, community_id: int | None) -> bool:
    return actor.is_admin or (community_id is not None and community_id in actor.ids(Role.COMMUNITY_STAFF))


def _manages(actor: Actor, need: Any) -> bool:
    return runs_community(actor, need.community_id)


def _handles(actor: Actor, need: Any) -> bool:
    return (
        _manages(actor, need)
        or (need.assignee_id is not None and need.assignee_id == actor.resident_id)
        or (need.department_id is not None and need.department_id in actor.ids(Role.DISTRICT_STAFF))
        or (need.department_id is not None and need.department_id in actor.ids(Role.UNIT_MEMBER))
        # 指派 to a unit (a property company…): each of its members handles the need as an assignee would.
        or (need.unit_id is not None and need.unit_id in actor.ids(Role.UNIT_MEMBER))
    )


def _sees(actor: Actor, need: Any) -> bool:
    return (
        _handles(actor, need)
        or (need.building_id is not None and need.building_id in actor.ids(Role.BUILDING_LEADER))
        or (need.grid_id is not None and need.grid_id in actor.ids(Role.GRID_WORKER))
    )


def _files_for(actor: Actor, building: Any) -> bool:
    return (
        actor.trusted
        or building.id in actor.ids(Role.BUILDING_LEADER)
        or (building.grid_id is not None and building.grid_id in actor.ids(Role.GRID_WORKER))
    )


@dataclass(frozen=True)
class Rule:
    who: str  # for people reading this table
    test: Callable[[Actor, Any], bool]
    refusal: str  # formatted with the target as `t`


RULES: dict[Can, Rule] = {
    Can.RUN_COMMUNITY: Rule("该社区的社区工作人员；管理员", runs_community, "这不在您负责的社区。"),
    Can.REACH_DISTRICT: Rule(
        "区级部门工作人员；管理员",
        lambda a, _t: a.is_admin or a.holds(Role.DISTRICT_STAFF),
        "只有区级工作人员可以面向全街道。",
    ),
    Can.GRANT_ROLES: Rule("管理员", lambda a, _t: a.is_admin, "只有管理员可以授予或撤销角色。"),
    Can.FILE_FOR: Rule("该楼栋的楼片长；所在网格的网格员", _files_for, "{t.name}不在您负责的范围内，不能代报。"),
    Can.MANAGE_NEED: Rule("所在社区的社区工作人员；管理员", _manages, "诉求 {t.ticket} 不在您负责的社区。"),
    Can.HANDLE_NEED: Rule(
        "能管理的人；被指派的人或单位的成员；上报到的区级部门或单位", _handles, "诉求 {t.ticket} 不在您负责的范围内。"
    ),
    Can.SEE_NEED: Rule(
        "能办理的人；所在楼栋的楼片长、所在网格的网格员", _sees, "诉求 {t.ticket} 不在您负责的范围内。"
    ),
    Can.SEE_PHONE: Rule("能办理的人（每次查看都记入审计）", _handles, "您无权查看诉求 {t.ticket} 的联系电话。"),
    Can.ACT_FOR_UNIT: Rule(
        "该单位的单位成员",
        lambda a, t: a.trusted or (t is not None and t in a.ids(Role.UNIT_MEMBER)),
        "您不是该单位的成员。",
    ),
    Can.READ_AUDIT: Rule("管理员", lambda a, _t: a.is_admin, "只有管理员可以查看审计日志。"),
    Can.USE_CONSOLE: Rule(
        "社区工作人员、网格员、区级部门工作人员、单位成员、管理员",
        lambda a, _t: a.is_admin
        or a.holds(Role.COMMUNITY_STAFF, Role.GRID_WORKER, Role.DISTRICT_STAFF, Role.UNIT_MEMBER),
        "管理后台只对社区、网格、区级工作人员和承办单位成员开放。",
    ),
    Can.ENTER_INDICATORS: Rule(
        "区级部门工作人员；管理员（社区不能给自己打分）",
        lambda a, _t: a.is_admin or a.holds(Role.DISTRICT_STAFF),
        "只有区级工作人员可以录入社区的评价指标。",
    ),
    Can.RUN_SURVEY: Rule(
        "区级部门工作人员；管理员（问卷给社区打分，社区不发起）",
        lambda a, _t: a.is_admin or a.holds(Role.DISTRICT_STAFF),
        "只有区级工作人员可以发起满意度问卷。",
    ),
    Can.FILE_PARTNER: Rule(
        "有 API 密钥的对接系统（如12345热线）；管理员",
        lambda a, _t: a.is_admin or a.is_partner,
        "您无权代其他系统提交诉求。",
    ),
}


def allows(actor: Actor, can: Can, target: Any = None) -> bool:
    return RULES[can].test(actor, target)


def refusal(actor: Actor, can: Can, target: Any = None) -> str | None:
    """Why `actor` may not do `can` to `target`, in Chinese; None when it may."""
    rule = RULES[can]
    return None if rule.test(actor, target) else rule.refusal.format(t=target)
