"""The permission table (storage/policy.py) is the one place that decides; every rule is checked here against
the people it is written for and the people it must refuse."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from storage.actor import Actor
from storage.policy import RULES, Can, allows, refusal
from storage.roles import Role, RoleGrant

C1, C2, B1, B2, G1, G2, D1, D2 = 1, 2, 11, 12, 21, 22, 31, 32


def person(rid: int, *grants: tuple[Role, int | None]) -> Actor:
    rows = tuple(RoleGrant(resident_id=rid, role=r.value, scope_type="x", scope_id=s, granted_by="t",
                           granted_at=None) for r, s in grants)
    return Actor.resident(rid, rows)


NEED = SimpleNamespace(ticket="20261127-0001", community_id=C1, grid_id=G1, building_id=B1, department_id=None,
                       assignee_id=7, unit_id=None)
FOR_UNIT = SimpleNamespace(**{**vars(NEED), "assignee_id": None, "unit_id": D2})
ESCALATED = SimpleNamespace(**{**vars(NEED), "department_id": D1, "assignee_id": None})
BUILDING = SimpleNamespace(id=B1, grid_id=G1, community_id=C1, name="1号楼")

RESIDENT = person(1)
STAFF = person(2, (Role.COMMUNITY_STAFF, C1))
OTHER_STAFF = person(3, (Role.COMMUNITY_STAFF, C2))
LEADER = person(4, (Role.BUILDING_LEADER, B1))
WORKER = person(5, (Role.GRID_WORKER, G1))
DEPT = person(6, (Role.DISTRICT_STAFF, D1))
ASSIGNEE = person(7)
UNIT = person(8, (Role.UNIT_MEMBER, D1))
ADMIN = person(9, (Role.ADMIN, None))
OPERATOR = Actor.operator("cli:test")

CASES = [
    # permission, target, allowed, refused
    (Can.RUN_COMMUNITY, C1, [STAFF, ADMIN, OPERATOR], [RESIDENT, OTHER_STAFF, LEADER, WORKER, DEPT]),
    (Can.REACH_DISTRICT, None, [DEPT, ADMIN, OPERATOR], [RESIDENT, STAFF, LEADER]),
    (Can.GRANT_ROLES, None, [ADMIN, OPERATOR], [RESIDENT, STAFF, DEPT, LEADER]),
    (Can.READ_AUDIT, None, [ADMIN, OPERATOR], [RESIDENT, STAFF, DEPT, LEADER, WORKER]),
    (Can.FILE_FOR, BUILDING, [LEADER, WORKER, OPERATOR], [RESIDENT, person(10, (Role.BUILDING_LEADER, B2)),
                                                        person(11, (Role.GRID_WORKER, G2))]),
    (Can.MANAGE_NEED, NEED, [STAFF, ADMIN, OPERATOR], [RESIDENT, OTHER_STAFF, LEADER, WORKER, ASSIGNEE, DEPT]),
    (Can.HANDLE_NEED, NEED, [STAFF, ADMIN, ASSIGNEE], [RESIDENT, OTHER_STAFF, LEADER, WORKER, DEPT]),
    (Can.HANDLE_NEED, ESCALATED, [STAFF, DEPT, UNIT], [RESIDENT, ASSIGNEE, person(12, (Role.DISTRICT_STAFF, D2))]),
    (Can.HANDLE_NEED, FOR_UNIT, [STAFF, person(14, (Role.UNIT_MEMBER, D2))], [UNIT, ASSIGNEE, DEPT, WORKER]),
    (Can.SEE_NEED, NEED, [STAFF, ASSIGNEE, LEADER, WORKER], [RESIDENT, OTHER_STAFF, DEPT]),
    (Can.ACT_FOR_UNIT, D1, [UNIT, OPERATOR], [RESIDENT, STAFF, DEPT, ADMIN, person(13, (Role.UNIT_MEMBER, D2))]),
    (Can.SEE_PHONE, NEED, [STAFF, ADMIN, ASSIGNEE], [RESIDENT, OTHER_STAFF, LEADER, WORKER]),
    (Can.USE_CONSOLE, None, [STAFF, WORKER, DEPT, UNIT, ADMIN, OPERATOR], [RESIDENT, LEADER, ASSIGNEE,
                                                                           Actor.partner("x")]),
    (Can.ENTER_INDICATORS, C1, [DEPT, ADMIN, OPERATOR], [RESIDENT, STAFF, LEADER, WORKER, UNIT]),
    (Can.RUN_SURVEY, None, [DEPT, ADMIN, OPERATOR], [RESIDENT, STAFF, LEADER, WORKER, UNIT]),
    (Can.FILE_PARTNER, None, [Actor.partner("hotline"), ADMIN, OPERATOR], [RESIDENT, STAFF, LEADER, DEPT]),
]


@pytest.mark.parametrize(("can", "target", "allowed", "refused"), CASES, ids=[f"{c[0]}-{i}" for i, c in
                                                                             enumerate(CASES)])
def test_each_rule_allows_whom_it_names_and_refuses_the_rest_in_chinese(can, target, allowed, refused):
    for actor in allowed:
        assert allows(actor, can, target), (can, actor.name)
        assert refusal(actor, can, target) is None
    for actor in refused:
        assert not allows(actor, can, target), (can, actor.name)
        why = refusal(actor, can, target)
        assert why and not any(ch.isascii() and ch.isalpha() for ch in why.replace(str(getattr(target, "ticket", "")),
                                                                                   "")), why


def test_every_permission_has_a_rule_and_a_case():
    assert set(RULES) == set(Can)
    untested = set(Can) - {case[0] for case in CASES}
    assert not untested, f"add a case for {sorted(untested)}"
