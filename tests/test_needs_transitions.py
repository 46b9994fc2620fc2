"""The need state machine is one table (storage/needs/transitions.py): every action, from every state it allows,
leads to its state; from every other state it is refused with the Chinese reason and nothing changes."""

from __future__ import annotations

import pytest
from sqlmodel import select

from storage.needs import (
    OPEN_STATUSES,
    TRANSITIONS,
    Need,
    NeedError,
    NeedEvent,
    NeedStatus,
    apply_transition,
    refusal,
    report_need,
)
from tests.factories import make_district, make_resident

S = NeedStatus
HANDLING = (S.TRIAGED, S.ASSIGNED, S.IN_PROGRESS, S.REOPENED)

# The machine as the README and the staff guide describe it: action → {from-state: to-state}.
EXPECTED = {
    "triage": {S.REPORTED: S.TRIAGED, S.REOPENED: S.TRIAGED, S.TRIAGED: S.TRIAGED, S.ASSIGNED: S.ASSIGNED,
               S.IN_PROGRESS: S.IN_PROGRESS},
    "reclassify": {s: s for s in OPEN_STATUSES},
    "assign": {s: S.ASSIGNED for s in HANDLING},
    "escalate": {s: S.ESCALATED for s in (S.REPORTED, *HANDLING)},
    "progress": {**{s: S.IN_PROGRESS for s in HANDLING}, S.ESCALATED: S.ESCALATED, S.SUPERVISED: S.SUPERVISED},
    "resolve": {s: S.RESOLVED for s in (*HANDLING, S.ESCALATED, S.SUPERVISED)},
    "resolve_by_project": {s: S.RESOLVED for s in OPEN_STATUSES},
    "reject": {s: S.REJECTED for s in (S.REPORTED, S.TRIAGED, S.REOPENED)},
    "merge": {s: S.MERGED for s in (S.REPORTED, *HANDLING)},
    "second": {s: s for s in OPEN_STATUSES},
    "rate": {S.RESOLVED: S.RATED},
    "reopen": {S.RESOLVED: S.REOPENED},
    "close": {S.RESOLVED: S.CLOSED},
    "supervise": {S.RESOLVED: S.SUPERVISED},  # a final 不满意: 区级督办
}
NAMES = {"triage": "分流定级", "reclassify": "改类", "assign": "指派", "escalate": "上报区级", "progress": "登记进展",
         "resolve": "办结", "resolve_by_project": "办结", "reject": "驳回", "merge": "合并", "second": "附议",
         "rate": "评价", "reopen": "评价", "close": "关闭", "supervise": "评价"}


def test_the_table_is_the_documented_machine():
    assert {action: dict(t.moves) for action, t in TRANSITIONS.items()} == EXPECTED
    assert {action: t.name for action, t in TRANSITIONS.items()} == NAMES
    # Only resolve/rate/close/reopen/supervise/reject/merge leave the open states; nothing leaves a final state.
    finals = set(S) - OPEN_STATUSES - {S.RESOLVED}
    assert all(t.target(state) is None for t in TRANSITIONS.values() for state in finals)


def _refused(ticket: str, state: S, action: str) -> str:
    """The refusal: its state and action, and — for what a tier would allow (进展, 办结, 指派) on a need nobody has
    triaged yet — the step before it."""
    why = f"诉求 {ticket} 当前状态是「{state.label}」，不能{NAMES[action]}。"
    if state is S.REPORTED and S.TRIAGED in EXPECTED[action]:
        why += f"请先分流（「分流 {ticket} A」，或回复「待分流」）。"
    return why


@pytest.mark.parametrize("action", sorted(TRANSITIONS))
def test_each_action_is_refused_from_every_state_it_does_not_name(action):
    need = Need(ticket="20261127-0001", text="x", item_code="JZ-05", category="c", tier="A", community_id=1,
                created_at=None, updated_at=None)
    for state in S:
        need.status = state.value
        if state in EXPECTED[action]:
            assert refusal(need, action) is None
        else:
            assert refusal(need, action) == _refused("20261127-0001", state, action)


async def test_applying_every_action_from_every_state_moves_or_refuses_and_records_one_event(db, clock):
    d = await make_district(db)
    reporter = await make_resident(db, "o_reporter", d.buildings["B1"])
    need = await report_need(db, reporter.id, "楼道灯坏了，晚上看不见", "JZ-05", clock.now())

    async def events() -> int:
        async with db.read() as s:
            return len((await s.exec(select(NeedEvent).where(NeedEvent.need_id == need.id))).all())

    for action, transition in TRANSITIONS.items():
        for state in S:
            clock.advance(minutes=1)
            before_events = await events()
            try:
                async with db.write() as s:
                    row = (await s.exec(select(Need).where(Need.id == need.id).with_for_update())).one()
                    row.status, row.responded_at = state.value, None
                    event = await apply_transition(s, row, action, clock.now(), actor_id=None, actor_label="测试",
                                                   note="测试")
            except NeedError as refused:
                assert state not in EXPECTED[action], (action, state)
                assert refused.reason == _refused(need.ticket, state, action)
                assert await events() == before_events  # nothing written: the transaction rolled back
                continue
            target = EXPECTED[action].get(state)
            assert target is not None, f"{action} from {state} should be refused"
            after = await _need(db, need.id)
            assert after.state is target, (action, state)
            assert (event.kind, event.from_status, event.to_status) == (transition.event, state.value, target.value)
            assert await events() == before_events + 1
            assert (after.responded_at is not None) == transition.responds, (action, state)
            if target is S.RESOLVED:
                assert after.resolved_at is not None and after.rate_by is not None
            if state is S.RESOLVED:  # rated, reopened or closed: the rating window is over
                assert after.rate_by is None and after.status != S.RESOLVED


async def _need(db, need_id: int) -> Need:
    async with db.read() as s:
        return await s.get(Need, need_id)
