"""The timeline: every event of a need is one ``NeedEvent`` row; a public one moves the feedback clock and tells
the followers (the actor excepted: they see the reply)."""

from __future__ import annotations

import datetime as dt
import json

from storage.needs.deadlines import feedback_due
from storage.needs.model import MAX_TEXT, Need, NeedEvent
from storage.needs.notices import _clip, _followers, _outbox, follower_notice
from storage.outbox import NoticeKind
from storage.taxonomy import load_taxonomy


def _event_row(
    need: Need,
    now: dt.datetime,
    kind: str,
    *,
    actor_id: int | None,
    actor_label: str,
    from_status: str | None,
    note: str = "",
    public: bool = True,
    **detail,
) -> NeedEvent:
    """A timeline event and what it does to its need: a public one moves the feedback clock and the latest note.
    Both change in memory only; the caller writes them."""
    event = NeedEvent(
        need_id=need.id,
        at=now,
        kind=kind,
        actor_id=actor_id,
        actor_label=actor_label,
        from_status=from_status,
        to_status=need.status,
        public=public,
        note=_clip(note, MAX_TEXT) if note else "",
        detail=json.dumps(detail, ensure_ascii=False, default=str),
    )
    need.updated_at = now
    if public:
        need.last_progress_at = now
        if note:
            need.latest_note = _clip(note)
        need.feedback_due_at = feedback_due(load_taxonomy(), need.tier, now) if need.is_open else None
    return event


async def _record(s, need: Need, now: dt.datetime, kind: str, *, notify: bool = True, **event) -> NeedEvent:
    """Add a timeline event (`_event_row`'s arguments) and, for public ones, one outbox row per follower (the
    actor excepted)."""
    row = _event_row(need, now, kind, **event)
    s.add(row)
    s.add(need)
    await s.flush()
    if row.public and notify:
        told = [rid for rid in await _followers(s, need.id) if rid != row.actor_id]
        for rater in (True, False):  # the notice asks only its rater to rate
            if group := [rid for rid in told if (rid == need.rater_id) == rater]:
                notice = follower_notice(need, row, asks_rating=rater)
                await _outbox(s, need, row, group, NoticeKind.NEED_UPDATE, notice, now)
    return row
