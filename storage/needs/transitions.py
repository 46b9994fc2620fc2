"""The need state machine: ONE table of transitions, applied by ONE function.

Each action names the states it may start from and the state each of them leads to; any other state refuses it
with ``NeedError`` (「诉求 … 当前状态是「…」，不能<action>。」)::

    reported ─triage─▶ triaged ─assign─▶ assigned ─progress─▶ in_progress ─resolve─▶ resolved
    reported/triaged… ─escalate─▶ escalated (上报区级: the department posts progress and resolves)
    reported/triaged/reopened ─reject─▶ rejected (with the reason and where to go)
    open ─merge─▶ merged (into another open need; followers move over)
    resolved ─rate─▶ rated;  ─reopen (a first 不满意)─▶ reopened (重办);  ─close (rating window over)─▶ closed
    resolved ─supervise (a final 不满意)─▶ supervised (区级督办: handled on, under the district's oversight)

``reopened`` works like ``triaged`` (assign, progress, resolve); ``supervised`` takes progress (and stays) and
resolve. Re-triaging an assigned or in-progress need keeps
its state; progress on an escalated need keeps it escalated. ``reclassify`` and ``second`` are checked here too
but keep the state. ``apply_transition`` checks, changes the status, stamps the clocks the action stamps and
records the event (storage/needs/events.py: the followers' notices come with it); the operation around it
(storage/needs/handling.py, intake.py) sets what is its own (the tier, the assignee, the rating, …) first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from storage.needs.deadlines import default_resolve_by, respond_due
from storage.needs.events import _record
from storage.needs.model import OPEN_STATUSES, RATE_WINDOW, Need, NeedError, NeedEvent, NeedStatus
from storage.taxonomy import load_taxonomy

S = NeedStatus


def _stamp_triaged(need: Need, now: dt.datetime) -> None:
    need.triaged_at = now


def _stamp_escalated(need: Need, now: dt.datetime) -> None:
    need.resolve_by = None  # the department owns it
    need.triaged_at = need.triaged_at or now


def _stamp_resolved(need: Need, now: dt.datetime) -> None:
    need.resolved_at, need.rate_by = now, now + RATE_WINDOW


def _stamp_ended(need: Need, now: dt.datetime) -> None:
    need.resolve_by = need.respond_by = None


def _stamp_rating_window_over(need: Need, now: dt.datetime) -> None:
    need.rate_by = None


def _stamp_reopened(need: Need, now: dt.datetime) -> None:
    """重办: a new first-response and resolution limit from now; the 督办 stamps start again."""
    taxonomy = load_taxonomy()
    need.rework_count += 1
    need.resolved_at = need.rate_by = None
    need.respond_by = respond_due(taxonomy, need.tier, now)
    need.responded_at = None
    need.resolve_by = default_resolve_by(taxonomy, need.tier, now)
    need.reminded_at = need.chased_at = need.district_reported_at = None


def _stamp_supervised(need: Need, now: dt.datetime) -> None:
    """督办: the district oversees it now (reported at once); no community clock runs until it is resolved."""
    need.resolved_at = need.rate_by = None
    need.respond_by = need.resolve_by = None
    need.reminded_at = need.chased_at = None
    need.district_reported_at = now


@dataclass(frozen=True)
class Transition:
    name: str  # the action in a refusal: 不能<name>
    event: str  # the NeedEvent kind it records
    moves: Mapping[NeedStatus, NeedStatus]  # from-state → to-state; every other state refuses the action
    responds: bool = False  # a staff action: the first one answers the need (responded_at)
    stamp: Callable[[Need, dt.datetime], None] | None = None  # the clock columns it sets

    def target(self, state: NeedStatus) -> NeedStatus | None:
        return self.moves.get(state)


def _to(target: NeedStatus, *sources: NeedStatus) -> dict[NeedStatus, NeedStatus]:
    return {source: target for source in sources}


def _stay(*sources: NeedStatus) -> dict[NeedStatus, NeedStatus]:
    return {source: source for source in sources}


_HANDLING = (S.TRIAGED, S.ASSIGNED, S.IN_PROGRESS, S.REOPENED)  # triaged work that no department owns yet

TRANSITIONS: dict[str, Transition] = {
    "triage": Transition("分流定级", "triaged", {
        S.REPORTED: S.TRIAGED, S.REOPENED: S.TRIAGED, **_stay(S.TRIAGED, S.ASSIGNED, S.IN_PROGRESS),
    }, responds=True, stamp=_stamp_triaged),
    "reclassify": Transition("改类", "reclassified", _stay(*OPEN_STATUSES)),
    "assign": Transition("指派", "assigned", _to(S.ASSIGNED, *_HANDLING), responds=True),
    "escalate": Transition("上报区级", "escalated", _to(S.ESCALATED, S.REPORTED, *_HANDLING), responds=True,
                           stamp=_stamp_escalated),
    "progress": Transition("登记进展", "progress",
                           {**_to(S.IN_PROGRESS, *_HANDLING), **_stay(S.ESCALATED, S.SUPERVISED)}, responds=True),
    "resolve": Transition("办结", "resolved", _to(S.RESOLVED, S.ESCALATED, S.SUPERVISED, *_HANDLING), responds=True,
                          stamp=_stamp_resolved),
    # A completed service project (storage/projects.py) resolves any open need it answers.
    "resolve_by_project": Transition("办结", "resolved", _to(S.RESOLVED, *OPEN_STATUSES), responds=True,
                                     stamp=_stamp_resolved),
    "reject": Transition("驳回", "rejected", _to(S.REJECTED, S.REPORTED, S.TRIAGED, S.REOPENED), responds=True,
                         stamp=_stamp_ended),
    "merge": Transition("合并", "merged", _to(S.MERGED, S.REPORTED, *_HANDLING), responds=True,
                        stamp=_stamp_ended),
    "second": Transition("附议", "seconded", _stay(*OPEN_STATUSES)),
    "rate": Transition("评价", "rated", {S.RESOLVED: S.RATED}, stamp=_stamp_rating_window_over),
    "reopen": Transition("评价", "reopened", {S.RESOLVED: S.REOPENED}, stamp=_stamp_reopened),  # a 1st 不满意
    "close": Transition("关闭", "closed", {S.RESOLVED: S.CLOSED}, stamp=_stamp_rating_window_over),
    # A final 不满意 (after the rework): 督办, a district-level item carrying the resident's comment.
    "supervise": Transition("评价", "supervised", {S.RESOLVED: S.SUPERVISED}, stamp=_stamp_supervised),
}


def refusal(need: Need, action: str) -> str | None:
    """Why the need's state refuses `action`, or None."""
    transition = TRANSITIONS[action]
    if transition.target(need.state) is None:
        why = f"诉求 {need.ticket} 当前状态是「{need.state.label}」，不能{transition.name}。"
        if need.state is S.REPORTED and transition.target(S.TRIAGED) is not None:  # 进展/办结 before a tier
            why += f"请先分流（「分流 {need.ticket} A」，或回复「待分流」）。"
        return why
    return None


def check(need: Need, action: str) -> None:
    """Raise NeedError when the need's state refuses `action`."""
    reason = refusal(need, action)
    if reason is not None:
        raise NeedError(reason)


async def apply_transition(
    s,
    need: Need,
    action: str,
    now: dt.datetime,
    *,
    actor_id: int | None,
    actor_label: str,
    note: str = "",
    public: bool = True,
    notify: bool = True,
    **detail,
) -> NeedEvent:
    """Take `action` on the (locked) need: check its state, move it, stamp the action's clocks and the first
    response, and record the event (public events tell the followers). Returns the event."""
    check(need, action)
    transition = TRANSITIONS[action]
    before = need.state
    due = need.respond_by  # before a stamp clears it (驳回, 合并): the 响应率 judges against it
    need.status = transition.target(before).value
    if transition.stamp is not None:
        transition.stamp(need, now)
    if transition.responds and need.responded_at is None:
        need.responded_at = now
    if transition.responds and need.first_responded_at is None:
        need.first_responded_at, need.first_respond_by = now, due
    return await _record(s, need, now, transition.event, actor_id=actor_id, actor_label=actor_label,
                         from_status=before.value, note=note, public=public, notify=notify, **detail)
