"""Needs (民需诉求): the five-step loop's first two steps and its feedback — report, triage, handle, resolve, rate.

The package, by concern (each module imports only those above it; this file re-exports what callers use):

- ``model``: the tables (``Need`` with its ticket ``20261127-0007`` from ``NeedTicketCounter``, ``NeedEvent`` the
  append-only timeline, ``NeedFollower`` who hears about a need), ``NeedStatus``, ``NeedError``, the limits.
- ``deadlines``: the tier clocks (respond/resolve/feedback due) and how moments read.
- ``notices``: what followers and staff read, and queueing it (``storage.outbox.enqueue``, one row per
  recipient and event, keyed ``need:{need_id}:ev:{event_id}:r:{resident_id}``; a reopening is urgent).
- ``events``: ``_record``, the timeline row (and, for public events, the followers' notices; the actor excepted).
- ``transitions``: the state machine — ONE table ``TRANSITIONS`` (action → from-state → to-state, the event it
  records, the clocks it stamps) applied by ONE function ``apply_transition`` (check, move, stamp, record);
  a refusal raises ``NeedError`` with a Chinese reason.
- ``permissions``: who may manage / handle / oversee a need, the actor's label, loading a need locked.
- ``intake``: 反映, 代报, 附议 (and 代为附议), a need from a low survey score.
- ``handling``: the staff actions (分流, 改类, 指派, 上报区级, 驳回, 合并, 进展, 办结) and a project's resolution.
- ``rating``: 评价 (a first 不满意 reopens: 重办; a final one: 区级督办) and ``close_unrated`` when the rating
  window is over.
- ``queries``: reading (find, pages, timeline, merge targets, assignable people, names).
- ``media``: a need's photos and voices (``NeedMedia``, up to 9 photos): copied out of WeChat into the media
  store (storage/media.py) before WeChat's 3 days are up, found again for staff by their link's token.

The state machine (transitions.py)::

    reported ─triage─▶ triaged ─assign─▶ assigned ─progress─▶ in_progress ─resolve─▶ resolved
    reported/triaged ─escalate─▶ escalated (上报区级: the department posts progress and resolves)
    reported/triaged ─reject─▶ rejected (with the reason and where to go)
    open ─merge─▶ merged (into another open need; followers move over)
    resolved ─rate 满意/基本满意─▶ rated;  ─rate 不满意 (1st)─▶ reopened (重办);  ─rate 满意/基本满意 (2nd)─▶ rated
    resolved ─close_unrated (rating window over)─▶ closed
    resolved ─rate 不满意 (after the rework, final)─▶ supervised (区级督办) ─progress/resolve─▶ …

``reopened`` works like ``triaged`` (assign, progress, resolve). Open states: see ``OPEN_STATUSES``.

Staff are told through the outbox too: the assignee on assignment, the department's staff on escalation, the
handler (or the community's staff) on a 不满意 rating.

Clock columns for the scheduler (all UTC-aware; None = nothing due)
-----------------------------------------------------------------
- ``respond_by``: first response due (tier clock ``first_response`` from the report, or from a reopening).
  ``responded_at`` is set on the first staff action; a need with ``responded_at`` None past ``respond_by`` is late.
  ``first_responded_at`` / ``first_respond_by``: the very first answer and the clock it was due by, kept through
  a rework, a rejection or a merge (the 响应率, storage/stats.py).
- ``resolve_by``: resolution due (A: close of the next working day; B: the staff deadline, default 7 working
  days, up to 15 with ``extension_reason``; reopened: a new limit). None for C (plan reviewed at the 17th
  consultation) and for escalated needs (the department owns them).
- ``feedback_due_at``: when followers must next hear progress (B: 3 working days after the last public event;
  C: the working day after the next 17th; 上报区级: 7 days). Moved on every public event; None when closed.
- ``last_progress_at``: the last public event.
- ``resolved_at``, ``rate_by`` (resolution + 7 days: remind, then ``close_unrated``, the job
  ``needs.close_unrated``), ``rated_at``. Only a resolved need carries a ``rate_by``.
- ``reminded_at``, ``chased_at``, ``district_reported_at``: 督办 stamps, set by storage/need_clocks.py (a
  conditional update in the same transaction as the notice, so a second scheduler run sends nothing), cleared
  when a need is reopened.
"""

from __future__ import annotations

from storage.needs.contact import phones_in_text, reveal_phone, reveal_phones
from storage.needs.deadlines import (
    add_span,
    default_resolve_by,
    feedback_due,
    format_date,
    format_time,
    next_consultation,
    promise_text,
    respond_due,
)
from storage.needs.events import _record
from storage.needs.handling import (
    PROJECT_RESOLVABLE,
    assign_need,
    assign_unit,
    escalate_need,
    merge_need,
    parse_deadline,
    plan_for_project,
    post_progress,
    reclassify_need,
    reject_need,
    resolve_from_project,
    resolve_need,
    triage_need,
    triaged_before,
)
from storage.needs.intake import (
    SIMILAR_OFFERED,
    SIMILAR_READ,
    SUBMITTED_NOTE,
    SURVEY_FALLBACK_ITEM,
    Attachments,
    MediaRef,
    PartnerHandoff,
    SimilarNeed,
    adopt_filed_for,
    create_from_survey,
    file_on_behalf,
    find_duplicate,
    find_similar,
    hand_over_from_partner,
    public_summary,
    report_from_partner,
    report_need,
    reported_ticket,
    second_from_partner,
    second_need,
    second_on_behalf,
    similar,
)
from storage.needs.media import MediaGone, fetch_due_media, media_lines, media_link, need_media, stored_media
from storage.needs.model import (
    AWAITING_TRIAGE,
    DUPLICATE_WINDOW,
    EVENT_LABELS,
    MAX_NOTE,
    MAX_PHOTOS,
    MAX_TEXT,
    MAX_VOICES,
    MEDIA_VALIDITY,
    MERGE_CANDIDATES,
    NOT_TRIAGED,
    OPEN_STATUSES,
    PAGE_SIZE,
    RATE_WINDOW,
    RATINGS,
    STAFF_NOTICE_LIMIT,
    STATUS_LABELS,
    TICKET_RE,
    UNCLASSIFIED,
    UNCLASSIFIED_CATEGORY,
    DeadlineError,
    MediaStatus,
    Need,
    NeedError,
    NeedEvent,
    NeedFollower,
    NeedMedia,
    NeedStatus,
    NeedTicketCounter,
    normalise_ticket,
    status_from_word,
)
from storage.needs.notices import URGENT_EVENTS, follower_notice, shown_text, summary_line
from storage.needs.permissions import management_refusal
from storage.needs.queries import (
    LEDGER_EXPORT_LIMIT,
    LEDGER_PAGE,
    SORTS,
    SOURCES,
    LedgerFilter,
    LedgerPage,
    LinePage,
    Page,
    QueueSection,
    assignable_people,
    assignable_units,
    awaiting_rating,
    escalation_departments,
    find_need,
    follower_counts,
    is_follower,
    ledger,
    ledger_batches,
    ledger_places,
    list_needs,
    merge_candidates,
    names_for,
    own_needs,
    people_names,
    seen_by,
    timeline,
    today_queue,
    unit_named,
    unit_needs,
)
from storage.needs.rating import (
    CLOSE_BATCH,
    CLOSED_NOTE,
    RATED_BY_REPORTER,
    SUPERVISED_NOTE,
    add_rating_comment,
    close_unrated,
    closed_query,
    rate_need,
)
from storage.needs.transitions import TRANSITIONS, Transition, apply_transition, check, refusal

__all__ = [
    "AWAITING_TRIAGE",
    "CLOSED_NOTE",
    "CLOSE_BATCH",
    "DUPLICATE_WINDOW",
    "EVENT_LABELS",
    "LEDGER_EXPORT_LIMIT",
    "LEDGER_PAGE",
    "MAX_NOTE",
    "MAX_PHOTOS",
    "MAX_TEXT",
    "MAX_VOICES",
    "MEDIA_VALIDITY",
    "MERGE_CANDIDATES",
    "NOT_TRIAGED",
    "OPEN_STATUSES",
    "PAGE_SIZE",
    "PROJECT_RESOLVABLE",
    "RATED_BY_REPORTER",
    "RATE_WINDOW",
    "RATINGS",
    "SIMILAR_OFFERED",
    "SIMILAR_READ",
    "SORTS",
    "SOURCES",
    "STAFF_NOTICE_LIMIT",
    "STATUS_LABELS",
    "SUBMITTED_NOTE",
    "SUPERVISED_NOTE",
    "SURVEY_FALLBACK_ITEM",
    "TICKET_RE",
    "TRANSITIONS",
    "UNCLASSIFIED",
    "UNCLASSIFIED_CATEGORY",
    "URGENT_EVENTS",
    "Attachments",
    "DeadlineError",
    "LedgerFilter",
    "LedgerPage",
    "LinePage",
    "MediaGone",
    "MediaRef",
    "MediaStatus",
    "Need",
    "NeedError",
    "NeedEvent",
    "NeedFollower",
    "NeedMedia",
    "NeedStatus",
    "NeedTicketCounter",
    "Page",
    "PartnerHandoff",
    "QueueSection",
    "SimilarNeed",
    "Transition",
    "_record",
    "add_rating_comment",
    "add_span",
    "adopt_filed_for",
    "apply_transition",
    "assign_need",
    "assign_unit",
    "assignable_people",
    "assignable_units",
    "awaiting_rating",
    "check",
    "close_unrated",
    "closed_query",
    "create_from_survey",
    "default_resolve_by",
    "escalate_need",
    "escalation_departments",
    "feedback_due",
    "fetch_due_media",
    "file_on_behalf",
    "find_duplicate",
    "find_need",
    "find_similar",
    "follower_counts",
    "follower_notice",
    "format_date",
    "format_time",
    "hand_over_from_partner",
    "is_follower",
    "ledger",
    "ledger_batches",
    "ledger_places",
    "list_needs",
    "management_refusal",
    "media_lines",
    "media_link",
    "merge_candidates",
    "merge_need",
    "names_for",
    "need_media",
    "next_consultation",
    "normalise_ticket",
    "own_needs",
    "parse_deadline",
    "people_names",
    "phones_in_text",
    "plan_for_project",
    "post_progress",
    "promise_text",
    "public_summary",
    "rate_need",
    "reclassify_need",
    "refusal",
    "reject_need",
    "report_from_partner",
    "report_need",
    "reported_ticket",
    "resolve_from_project",
    "resolve_need",
    "respond_due",
    "reveal_phone",
    "reveal_phones",
    "second_from_partner",
    "second_need",
    "second_on_behalf",
    "seen_by",
    "shown_text",
    "similar",
    "status_from_word",
    "stored_media",
    "summary_line",
    "timeline",
    "today_queue",
    "triage_need",
    "triaged_before",
    "unit_named",
    "unit_needs",
]
