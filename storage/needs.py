"""Needs (民需诉求): the five-step loop's first two steps and its feedback — report, triage, handle, resolve, rate.

Tables
------
- ``Need``: one resident need with its ticket number (``20261127-0007``: the district-local date and a per-day
  sequence from ``NeedTicketCounter``, taken in the same transaction, so numbers are unique and gap-free under
  concurrency on SQLite and PostgreSQL).
- ``NeedEvent``: the timeline, append-only: every transition with its actor, public or internal.
- ``NeedFollower``: who hears about a need (the reporter, the leader who filed it, residents who seconded it).

The state machine (every transition is checked here; a refusal raises ``NeedError`` with a Chinese reason)::

    reported ─triage─▶ triaged ─assign─▶ assigned ─progress─▶ in_progress ─resolve─▶ resolved
    reported/triaged ─escalate─▶ escalated (上报区级: the department posts progress and resolves)
    reported/triaged ─reject─▶ rejected (with the reason and where to go)
    open ─merge─▶ merged (into another open need; followers move over)
    resolved ─rate 满意/基本满意─▶ rated;  ─rate 不满意 (1st)─▶ reopened (重办);  ─rate (2nd, final)─▶ rated
    resolved ─close_unrated (rating window over)─▶ closed

``reopened`` works like ``triaged`` (assign, progress, resolve). Open states: see ``OPEN_STATUSES``.

Notifications: each transition queues one outbox row per follower (the actor excepted: they see the reply)
with the key ``need:{need_id}:ev:{event_id}:r:{resident_id}``, in the same transaction (``storage.outbox.enqueue``;
a reopening is urgent). Staff are told through
the outbox too: the assignee on assignment, the department's staff on escalation, the handler (or the
community's staff) on a 不满意 rating.

Clock columns for the scheduler (all UTC-aware; None = nothing due)
-----------------------------------------------------------------
- ``respond_by``: first response due (tier clock ``first_response`` from the report, or from a reopening).
  ``responded_at`` is set on the first staff action; a need with ``responded_at`` None past ``respond_by`` is late.
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

import datetime as dt
import enum
import itertools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Index, UniqueConstraint, func, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select

from storage import workdays
from storage.classifier import default_classifier
from storage.clock import local
from storage.db import Database
from storage.org import Building, Community, Department, Grid
from storage.outbox import NoticeKind, NoticePriority, enqueue
from storage.residents import Resident, mask_phone
from storage.roles import Role, RoleGrant, Scope, audit_entry, scope_of
from storage.taxonomy import Span, Taxonomy, Tier, load_taxonomy
from storage.text import clip


class NeedStatus(enum.StrEnum):
    REPORTED = "reported"
    TRIAGED = "triaged"
    ASSIGNED = "assigned"
    ESCALATED = "escalated"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    RATED = "rated"
    CLOSED = "closed"
    REJECTED = "rejected"
    MERGED = "merged"
    REOPENED = "reopened"

    @property
    def label(self) -> str:
        """The public state a resident reads. Honest: only resolved work says 已办结."""
        return STATUS_LABELS[self]


STATUS_LABELS = {
    NeedStatus.REPORTED: "已提交，待社区受理",
    NeedStatus.TRIAGED: "社区已受理",
    NeedStatus.ASSIGNED: "已派专人办理",
    NeedStatus.ESCALATED: "已上报区级部门办理",
    NeedStatus.IN_PROGRESS: "办理中",
    NeedStatus.RESOLVED: "已办结，待评价",
    NeedStatus.RATED: "已办结，已评价",
    NeedStatus.CLOSED: "已办结，未评价",
    NeedStatus.REJECTED: "未受理",
    NeedStatus.MERGED: "已合并到其他诉求",
    NeedStatus.REOPENED: "重新办理中",
}

S = NeedStatus
OPEN_STATUSES = frozenset({S.REPORTED, S.TRIAGED, S.ASSIGNED, S.ESCALATED, S.IN_PROGRESS, S.REOPENED})
# Which states each action may start from, and its name in a refusal.
ALLOWED: dict[str, tuple[frozenset[NeedStatus], str]] = {
    "triage": (frozenset({S.REPORTED, S.TRIAGED, S.ASSIGNED, S.IN_PROGRESS, S.REOPENED}), "分流定级"),
    "reclassify": (OPEN_STATUSES, "改类"),
    "assign": (frozenset({S.TRIAGED, S.ASSIGNED, S.IN_PROGRESS, S.REOPENED}), "指派"),
    "escalate": (frozenset({S.REPORTED, S.TRIAGED, S.ASSIGNED, S.IN_PROGRESS, S.REOPENED}), "上报区级"),
    "progress": (frozenset({S.TRIAGED, S.ASSIGNED, S.ESCALATED, S.IN_PROGRESS, S.REOPENED}), "登记进展"),
    "resolve": (frozenset({S.TRIAGED, S.ASSIGNED, S.ESCALATED, S.IN_PROGRESS, S.REOPENED}), "办结"),
    "reject": (frozenset({S.REPORTED, S.TRIAGED, S.REOPENED}), "驳回"),
    "merge": (frozenset({S.REPORTED, S.TRIAGED, S.ASSIGNED, S.IN_PROGRESS, S.REOPENED}), "合并"),
    "second": (OPEN_STATUSES, "附议"),
    "rate": (frozenset({S.RESOLVED}), "评价"),
    "close": (frozenset({S.RESOLVED}), "关闭"),
}

RATINGS = ("满意", "基本满意", "不满意")
DUPLICATE_WINDOW = dt.timedelta(days=14)
RATE_WINDOW = dt.timedelta(days=7)
MAX_TEXT = 500
MAX_NOTE = 200
PAGE_SIZE = 8
STAFF_NOTICE_LIMIT = 20  # at most this many staff are told of one escalation or rework
TICKET_RE = re.compile(r"^(\d{8})-?(\d{4,})$")
NOT_TRIAGED = "诉求 {ticket} 还没有分流定级，请先「分流 {ticket} A/B/C」。"
MERGE_CANDIDATES = 5  # open needs of the same sub-item offered as merge targets


class NeedError(Exception):
    """A refused need operation; `reason` is the Chinese sentence to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Need(SQLModel, table=True):
    # The rating-window scan (close_unrated): status = resolved AND rate_by <= now, in rate_by order.
    __table_args__ = (Index("ix_need_status_rate_by", "status", "rate_by"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket: str = Field(max_length=20, unique=True)
    status: str = Field(default=NeedStatus.REPORTED.value, max_length=16, index=True)
    text: str = Field(max_length=MAX_TEXT)
    item_code: str = Field(max_length=16, index=True)
    category: str = Field(max_length=32)
    tier: str = Field(max_length=16)  # the item's default until staff triage (triaged_at says which)
    # Who and where
    reporter_id: int | None = Field(default=None, foreign_key="resident.id", index=True)
    filed_by_id: int | None = Field(default=None, foreign_key="resident.id")  # 代报: the leader
    contact_name: str | None = Field(default=None, max_length=32)
    contact_phone: str | None = Field(default=None, max_length=20)
    community_id: int = Field(foreign_key="community.id", index=True)
    grid_id: int | None = Field(default=None, foreign_key="grid.id", index=True)
    building_id: int | None = Field(default=None, foreign_key="building.id", index=True)
    room: str | None = Field(default=None, max_length=16)
    photo_url: str | None = Field(default=None, max_length=512)
    latitude: float | None = None
    longitude: float | None = None
    location_label: str | None = Field(default=None, max_length=128)
    supporters: int = 1  # residents who raised it: the reporter plus everyone who seconded
    # Handling
    assignee_id: int | None = Field(default=None, foreign_key="resident.id", index=True)
    department_id: int | None = Field(default=None, foreign_key="department.id", index=True)
    merged_into_id: int | None = Field(default=None, foreign_key="need.id")
    extension_reason: str | None = Field(default=None, max_length=MAX_NOTE)
    latest_note: str | None = Field(default=None, max_length=MAX_NOTE)  # the last public note
    rating: str | None = Field(default=None, max_length=8)
    rating_comment: str | None = Field(default=None, max_length=MAX_NOTE)
    ratings_given: int = 0
    rework_count: int = 0
    # Clocks (see the module docstring)
    created_at: dt.datetime = Field(index=True)
    updated_at: dt.datetime
    triaged_at: dt.datetime | None = None
    respond_by: dt.datetime | None = Field(default=None, index=True)
    responded_at: dt.datetime | None = None
    resolve_by: dt.datetime | None = Field(default=None, index=True)
    feedback_due_at: dt.datetime | None = Field(default=None, index=True)
    last_progress_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    rate_by: dt.datetime | None = None  # indexed with status (ix_need_status_rate_by, 0013)
    rated_at: dt.datetime | None = None
    reminded_at: dt.datetime | None = None
    chased_at: dt.datetime | None = None
    district_reported_at: dt.datetime | None = None

    @property
    def state(self) -> NeedStatus:
        return NeedStatus(self.status)

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATUSES


class NeedEvent(SQLModel, table=True):
    __tablename__ = "need_event"

    id: int | None = Field(default=None, primary_key=True)
    need_id: int = Field(foreign_key="need.id", index=True)
    at: dt.datetime
    kind: str = Field(max_length=16)
    actor_id: int | None = Field(default=None, foreign_key="resident.id")
    actor_label: str = Field(max_length=32)  # "居民", "社区工作人员", "区住建局", "系统"
    from_status: str | None = Field(default=None, max_length=16)
    to_status: str = Field(max_length=16)
    public: bool = True
    note: str = Field(default="", max_length=MAX_TEXT)  # what followers read (public events)
    detail: str = Field(default="{}")  # JSON, internal


class NeedFollower(SQLModel, table=True):
    __tablename__ = "need_follower"
    __table_args__ = (UniqueConstraint("need_id", "resident_id", name="uq_need_follower"),)

    id: int | None = Field(default=None, primary_key=True)
    need_id: int = Field(foreign_key="need.id", index=True)
    resident_id: int = Field(foreign_key="resident.id", index=True)
    role: str = Field(max_length=16)  # reporter | filer | seconder
    created_at: dt.datetime


class NeedTicketCounter(SQLModel, table=True):
    """The last ticket sequence issued on each (district-local) day."""

    __tablename__ = "need_ticket_counter"

    day: str = Field(primary_key=True, max_length=8)
    last: int = 0


# ---------------------------------------------------------------------------------------------- clocks


def add_span(moment: dt.datetime, span: Span) -> dt.datetime:
    if span.unit == "hours":
        return moment + dt.timedelta(hours=span.amount)
    if span.unit == "working_hours":
        return workdays.add_working_hours(moment, span.amount)
    if span.unit == "working_days":
        return workdays.working_days_deadline(moment, span.amount)
    if span.unit == "weeks":
        return moment + dt.timedelta(weeks=span.amount)
    raise ValueError(f"unknown time unit {span.unit!r}")


def next_consultation(now: dt.datetime, day: int = 17) -> dt.date:
    """The next 阳光17议 date (today counts)."""
    today = local(now).date()
    if today.day <= day:
        return today.replace(day=day)
    first_next = (today.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    return first_next.replace(day=day)


def respond_due(taxonomy: Taxonomy, tier: str, since: dt.datetime) -> dt.datetime:
    return add_span(since, taxonomy.clock(tier).first_response)


def default_resolve_by(taxonomy: Taxonomy, tier: str, since: dt.datetime) -> dt.datetime | None:
    """The tier's own resolution limit from `since` (B: its default deadline)."""
    clock = taxonomy.clock(tier)
    if clock.resolve == "next_day_end":
        return workdays.end_of_working_day(workdays.add_working_days(since, 1))
    if clock.resolve == "staff_deadline" and clock.deadline_default:
        return add_span(since, clock.deadline_default)
    return None


def feedback_due(taxonomy: Taxonomy, tier: str, since: dt.datetime) -> dt.datetime | None:
    clock = taxonomy.clock(tier)
    if clock.feedback == "on_change" and clock.feedback_every:
        return add_span(since, clock.feedback_every)
    if clock.feedback == "monthly_after_consultation":
        meeting = next_consultation(since, clock.consultation_day or 17)
        return workdays.end_of_working_day(workdays.next_working_day(meeting))
    if clock.feedback == "weekly":
        return since + dt.timedelta(weeks=1)
    return None


SUBMITTED_NOTE = "诉求已提交"  # the first timeline note; it only repeats the state


def promise_text(need: Need) -> str:
    """The tier's promise in plain words, for the resident."""
    if need.respond_by is None:
        return ""
    return f"预计{format_time(need.respond_by)}前答复"


def format_time(moment: dt.datetime) -> str:
    m = local(moment)
    return f"{m.month}月{m.day}日{m.hour:02d}:{m.minute:02d}"


def format_date(moment: dt.datetime) -> str:
    m = local(moment)
    return f"{m.month}月{m.day}日"


# ---------------------------------------------------------------------------------------------- helpers


def normalise_ticket(text: str) -> str | None:
    match = TICKET_RE.match(text.strip())
    return f"{match.group(1)}-{match.group(2)}" if match else None


async def _next_ticket(s, db: Database, now: dt.datetime) -> str:
    day = local(now).strftime("%Y%m%d")
    table = NeedTicketCounter.__table__
    insert = sqlite_insert if db.is_sqlite else pg_insert
    await s.exec(insert(table).values(day=day, last=0).on_conflict_do_nothing(index_elements=["day"]))
    result = await s.exec(
        update(table).where(table.c.day == day).values(last=table.c.last + 1).returning(table.c.last)
    )
    return f"{day}-{result.scalar_one():04d}"


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


def _check(need: Need, action: str) -> None:
    allowed, name = ALLOWED[action]
    if need.state not in allowed:
        raise NeedError(f"诉求 {need.ticket} 当前状态是「{need.state.label}」，不能{name}。")


async def _load_managed(s, scope: Scope, ticket: str, action: str) -> Need:
    """The need, locked, for a community-staff action (`can_manage`) its status allows."""
    need = await _load(s, ticket)
    if not can_manage(scope, need):
        raise NeedError(f"诉求 {need.ticket} 不在您负责的社区。")
    _check(need, action)
    return need


async def _load_handled(s, scope: Scope, actor_id: int, ticket: str, action: str) -> Need:
    """The need, locked, for a handler's action (`can_handle`) its status allows."""
    need = await _load(s, ticket)
    if not can_handle(scope, need, actor_id):
        raise NeedError(f"诉求 {need.ticket} 不在您负责的范围内。")
    _check(need, action)
    return need


def can_manage(scope: Scope, need: Need) -> bool:
    """Triage, assign, escalate, merge, reject: the need's community staff (or an admin)."""
    return scope.is_admin or need.community_id in scope.ids(Role.COMMUNITY_STAFF)


def management_refusal(scope: Scope, need: Need, action: str) -> str | None:
    """Why a community-staff `action` ("reclassify", "assign", "merge", …) cannot start on this need, or None.

    Guided flows ask before their first question, so nobody walks three steps to a refusal; the operation
    itself checks again under the row lock."""
    if not can_manage(scope, need):
        return f"诉求 {need.ticket} 不在您负责的社区。"
    if action == "assign" and need.state is S.REPORTED:
        return NOT_TRIAGED.format(ticket=need.ticket)
    try:
        _check(need, action)
    except NeedError as exc:
        return exc.reason
    return None


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


def _clip(text: str, limit: int = MAX_NOTE) -> str:
    return clip(text.strip(), limit)


def summary_line(need: Need, width: int = 14) -> str:
    return clip(need.text.replace("\n", " "), width)


async def _followers(s, need_id: int) -> list[int]:
    rows = await s.exec(select(NeedFollower.resident_id).where(NeedFollower.need_id == need_id))
    return list(rows.all())


URGENT_EVENTS = frozenset({"reopened"})  # followers hear of these at once, even in the quiet hours


async def _outbox(
    s, need: Need, event: NeedEvent, recipients: int | Iterable[int], kind: NoticeKind, text: str, now: dt.datetime
) -> int:
    """One notice of this event to each recipient (a resident id, or several), keyed per event and resident."""
    ids = [recipients] if isinstance(recipients, int) else list(recipients)
    return await enqueue(
        s, kind, text, [(rid, f"need:{need.id}:ev:{event.id}:r:{rid}") for rid in ids], now,
        payload={"need_id": need.id, "ticket": need.ticket, "event": event.kind},
        priority=NoticePriority.URGENT if event.kind in URGENT_EVENTS else None,
    )


def follower_notice(need: Need, event: NeedEvent) -> str:
    lines = [f"【诉求进展】{need.ticket}", f"内容：{summary_line(need)}", f"状态：{need.state.label}"]
    if event.note:
        lines.append(f"说明：{_clip(event.note, 80)}")
    if need.state is NeedStatus.RESOLVED:
        lines.append(f"请回复「评价 {need.ticket}」评价办理结果（满意/基本满意/不满意）。")
    else:
        lines.append(f"回复「进度 {need.ticket}」查看详情。")
    return "\n".join(lines)


async def _record(
    s,
    need: Need,
    now: dt.datetime,
    kind: str,
    *,
    actor_id: int | None,
    actor_label: str,
    from_status: str | None,
    note: str = "",
    public: bool = True,
    notify: bool = True,
    **detail,
) -> NeedEvent:
    """Add a timeline event and, for public ones, one outbox row per follower (the actor excepted)."""
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
    s.add(event)
    need.updated_at = now
    if public:
        need.last_progress_at = now
        if note:
            need.latest_note = _clip(note)
        need.feedback_due_at = feedback_due(load_taxonomy(), need.tier, now) if need.is_open else None
    s.add(need)
    await s.flush()
    if public and notify:
        told = [rid for rid in await _followers(s, need.id) if rid != actor_id]
        await _outbox(s, need, event, told, NoticeKind.NEED_UPDATE, follower_notice(need, event), now)
    return event


async def _staff_of(s, community_id: int) -> list[int]:
    query = (
        select(RoleGrant.resident_id)
        .where(
            RoleGrant.role == Role.COMMUNITY_STAFF.value,
            RoleGrant.scope_id == community_id,
            RoleGrant.revoked_at.is_(None),
        )
        .limit(STAFF_NOTICE_LIMIT)
    )
    return list(dict.fromkeys((await s.exec(query)).all()))


def _first_response(need: Need, now: dt.datetime) -> None:
    if need.responded_at is None:
        need.responded_at = now


def _actor(resident_id: int | None) -> str:
    return f"resident:{resident_id}" if resident_id else "system"


# ---------------------------------------------------------------------------------------------- reporting


@dataclass(frozen=True)
class Attachments:
    photo_url: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    location_label: str | None = None


async def _create(
    s,
    db: Database,
    now: dt.datetime,
    *,
    text: str,
    item_code: str,
    community_id: int,
    grid_id: int | None,
    building_id: int | None,
    room: str | None,
    reporter_id: int | None,
    filed_by_id: int | None,
    contact_name: str | None,
    contact_phone: str | None,
    attachments: Attachments,
) -> Need:
    taxonomy = load_taxonomy()
    text = text.strip()
    if len(text) < 2:
        raise NeedError("请用一句话描述您要反映的问题。")
    if len(text) > MAX_TEXT:
        raise NeedError(f"内容太长了，请精简到{MAX_TEXT}字以内。")
    item = taxonomy.get(item_code)
    if item is None:
        raise NeedError(f"没有分类代码 {item_code}。")
    need = Need(
        ticket=await _next_ticket(s, db, now),
        text=text,
        item_code=item.code,
        category=item.category,
        tier=item.default_tier.value,
        reporter_id=reporter_id,
        filed_by_id=filed_by_id,
        contact_name=contact_name,
        contact_phone=contact_phone,
        community_id=community_id,
        grid_id=grid_id,
        building_id=building_id,
        room=room,
        photo_url=attachments.photo_url,
        latitude=attachments.latitude,
        longitude=attachments.longitude,
        location_label=attachments.location_label,
        created_at=now,
        updated_at=now,
        respond_by=respond_due(taxonomy, item.default_tier.value, now),
    )
    s.add(need)
    await s.flush()
    if reporter_id is not None:
        s.add(NeedFollower(need_id=need.id, resident_id=reporter_id, role="reporter", created_at=now))
    if filed_by_id is not None and filed_by_id != reporter_id:
        s.add(NeedFollower(need_id=need.id, resident_id=filed_by_id, role="filer", created_at=now))
    await s.flush()
    return need


async def report_need(
    db: Database,
    reporter_id: int,
    text: str,
    item_code: str,
    now: dt.datetime,
    attachments: Attachments | None = None,
) -> Need:
    """A bound resident reports a need; their building and room on file are attached."""
    async with db.write() as s:
        resident = await s.get(Resident, reporter_id)
        if resident is None or not resident.is_bound or resident.community_id is None:
            raise NeedError("请先绑定您的住址信息，再反映问题。")
        building = await s.get(Building, resident.building_id) if resident.building_id else None
        need = await _create(
            s, db, now, text=text, item_code=item_code, community_id=resident.community_id,
            grid_id=building.grid_id if building else None, building_id=resident.building_id, room=resident.room,
            reporter_id=resident.id, filed_by_id=None, contact_name=resident.name, contact_phone=resident.phone,
            attachments=attachments or Attachments(),
        )
        await _record(s, need, now, "reported", actor_id=resident.id, actor_label="居民",
                      from_status=None, note=SUBMITTED_NOTE)
    return need


async def file_on_behalf(
    db: Database,
    filer_id: int,
    text: str,
    item_code: str,
    now: dt.datetime,
    *,
    subject_id: int | None = None,
    contact_name: str | None = None,
    contact_phone: str | None = None,
    building_id: int | None = None,
    room: str | None = None,
) -> Need:
    """代报: a building leader (their buildings) or grid worker (their grids) files for a resident.

    Either `subject_id` (a bound resident, who then follows the need) or a contact (name + phone) with the
    building. The leader follows the need too.
    """
    scope = await scope_of(db, filer_id)
    async with db.write() as s:
        subject = await s.get(Resident, subject_id) if subject_id else None
        if subject_id and (subject is None or not subject.is_bound):
            raise NeedError("这位居民还没有绑定住址，请改用「姓名 手机号」代报。")
        if subject is not None:
            building_id, room = subject.building_id, subject.room
            contact_name, contact_phone = subject.name, subject.phone
        building = await s.get(Building, building_id) if building_id else None
        if building is None:
            raise NeedError("请先确定居民所在的楼栋。")
        if building.id not in scope.ids(Role.BUILDING_LEADER) and building.grid_id not in scope.ids(Role.GRID_WORKER):
            raise NeedError(f"{building.name}不在您负责的范围内，不能代报。")
        if subject is None and not (contact_name and contact_phone):
            raise NeedError("代报未绑定的居民，需要填写姓名和手机号。")
        need = await _create(
            s, db, now, text=text, item_code=item_code, community_id=building.community_id,
            grid_id=building.grid_id, building_id=building.id, room=room,
            reporter_id=subject.id if subject else None, filed_by_id=filer_id,
            contact_name=contact_name, contact_phone=contact_phone, attachments=Attachments(),
        )
        role = "楼片长" if building.id in scope.ids(Role.BUILDING_LEADER) else "网格员"
        await _record(s, need, now, "reported", actor_id=filer_id, actor_label=role, from_status=None,
                      note=f"{role}代为反映，已提交")
        s.add(audit_entry(now, _actor(filer_id), "need.file_on_behalf", "need", need.ticket,
                          subject=subject.id if subject else None, phone=mask_phone(contact_phone)))
    return need


def _bigrams(text: str) -> set[str]:
    chars = [c for c in text if c.isalnum()]
    return {a + b for a, b in itertools.pairwise(chars)}


def similar(a: str, b: str) -> bool:
    """Rough text similarity for 附议: shared character pairs (Dice ≥ 0.25) or a shared matched keyword."""
    x, y = _bigrams(a), _bigrams(b)
    if x and y and 2 * len(x & y) / (len(x) + len(y)) >= 0.25:
        return True
    words_a = {w for m in default_classifier().explain(a)[:1] for w in m.keywords}
    words_b = {w for m in default_classifier().explain(b)[:1] for w in m.keywords}
    return bool(words_a & words_b)


async def find_duplicate(
    db: Database, item_code: str, building_id: int | None, grid_id: int | None, text: str, now: dt.datetime
) -> Need | None:
    """An open need of the same sub-item in the same building (or grid), from the last 14 days, similar in text."""
    if building_id is None and grid_id is None:
        return None
    place = []
    if building_id is not None:
        place.append(Need.building_id == building_id)
    if grid_id is not None:
        place.append(Need.grid_id == grid_id)
    query = (
        select(Need)
        .where(
            Need.item_code == item_code,
            col(Need.status).in_([s.value for s in OPEN_STATUSES]),
            Need.created_at >= now - DUPLICATE_WINDOW,
            or_(*place),
        )
        .order_by(Need.created_at.desc())
        .limit(10)
    )
    async with db.read() as s:
        candidates = list((await s.exec(query)).all())
    candidates.sort(key=lambda n: n.building_id != building_id)  # the same building first
    return next((n for n in candidates if similar(n.text, text)), None)


async def second_need(db: Database, ticket: str, resident_id: int, now: dt.datetime) -> Need:
    """附议: a resident raises the same open need; they follow it and the count staff see goes up."""
    try:
        async with db.write() as s:
            need = await _load(s, ticket)
            _check(need, "second")
            if resident_id in await _followers(s, need.id):
                raise NeedError(f"您已经在关注诉求 {need.ticket}，有进展会通知您。")
            s.add(NeedFollower(need_id=need.id, resident_id=resident_id, role="seconder", created_at=now))
            need.supporters += 1
            await _record(s, need, now, "seconded", actor_id=resident_id, actor_label="居民",
                          from_status=need.status, public=False, note="又有一位居民反映了这个问题")
    except IntegrityError:
        raise NeedError("您已经在关注这条诉求，有进展会通知您。") from None
    return need


async def second_on_behalf(
    db: Database,
    filer_id: int,
    ticket: str,
    now: dt.datetime,
    *,
    subject_id: int | None = None,
    building_id: int | None = None,
    contact_name: str | None = None,
    contact_phone: str | None = None,
) -> Need:
    """代报 of a duplicate: a building leader (their buildings) or grid worker (their grids) seconds an open need
    for a resident instead of filing a new ticket.

    Either `subject_id` (a bound resident: they follow the need and are told) or a contact (name + phone) with the
    building. The count staff see goes up by one; the leader follows the need too.
    """
    scope = await scope_of(db, filer_id)
    try:
        async with db.write() as s:
            subject = await s.get(Resident, subject_id) if subject_id else None
            if subject_id and (subject is None or not subject.is_bound):
                raise NeedError("这位居民还没有绑定住址，请改用「姓名 手机号」代报。")
            if subject is not None:
                building_id = subject.building_id
            elif not (contact_name and contact_phone):
                raise NeedError("代报未绑定的居民，需要填写姓名和手机号。")
            building = await s.get(Building, building_id) if building_id else None
            if building is None:
                raise NeedError("请先确定居民所在的楼栋。")
            led = building.id in scope.ids(Role.BUILDING_LEADER)
            if not led and building.grid_id not in scope.ids(Role.GRID_WORKER):
                raise NeedError(f"{building.name}不在您负责的范围内，不能代报。")
            need = await _load(s, ticket)
            _check(need, "second")
            if need.community_id != building.community_id:
                raise NeedError(f"诉求 {need.ticket} 不在这位居民的社区，不能附议。")
            followers = set(await _followers(s, need.id))
            if subject is not None:
                if subject.id in followers:
                    raise NeedError(f"这位居民已经在关注诉求 {need.ticket}，有进展会通知他/她。")
                s.add(NeedFollower(need_id=need.id, resident_id=subject.id, role="seconder", created_at=now))
            if filer_id not in followers and (subject is None or subject.id != filer_id):
                s.add(NeedFollower(need_id=need.id, resident_id=filer_id, role="filer", created_at=now))
            need.supporters += 1
            role = "楼片长" if led else "网格员"
            event = await _record(s, need, now, "seconded", actor_id=filer_id, actor_label=role,
                                  from_status=need.status, public=False,
                                  note=f"{role}代一位居民附议了这个问题", subject=subject.id if subject else None)
            if subject is not None and subject.id != filer_id:
                text = (f"【代为附议】{role}已代您附议诉求 {need.ticket}\n内容：{summary_line(need)}\n"
                        f"状态：{need.state.label}\n有进展会通知您，回复「进度 {need.ticket}」查看。")
                await _outbox(s, need, event, subject.id, NoticeKind.NEED_UPDATE, text, now)
            s.add(audit_entry(now, _actor(filer_id), "need.second_on_behalf", "need", need.ticket,
                              subject=subject.id if subject else None,
                              phone=mask_phone(subject.phone if subject else contact_phone)))
    except IntegrityError:
        raise NeedError("这位居民已经在关注这条诉求，有进展会通知他/她。") from None
    return need


# ---------------------------------------------------------------------------------------------- staff


def parse_deadline(text: str, now: dt.datetime) -> dt.date:
    """MM-DD (or YYYY-MM-DD, M月D日) as the next such date from today."""
    value = text.strip().replace("月", "-").replace("日", "").replace("/", "-").replace(".", "-")
    parts = value.split("-")
    today = local(now).date()
    invalid = NeedError(f"「{text}」不是有效日期，请写成 月-日，例如 12-10。")
    if len(parts) not in (2, 3):
        raise invalid
    try:
        if len(parts) == 3:
            return dt.date(int(parts[0]), int(parts[1]), int(parts[2]))
        day = dt.date(today.year, int(parts[0]), int(parts[1]))
    except ValueError as exc:
        raise invalid from exc
    return day if day >= today else day.replace(year=today.year + 1)


async def triage_need(
    db: Database,
    actor_id: int,
    ticket: str,
    tier: str,
    now: dt.datetime,
    deadline: dt.date | None = None,
    extension_reason: str | None = None,
) -> Need:
    """分流定级: A (立行立办), B (限时办理, deadline default 7 working days, up to 15 with a reason), C (定期办理)."""
    taxonomy = load_taxonomy()
    try:
        wanted = Tier.parse(tier)
    except ValueError:
        raise NeedError("分级只能是 A、B 或 C。") from None
    if wanted is Tier.DISTRICT:
        raise NeedError("上报区级请用「上报区级 <编号> <部门代码>」。")
    scope = await scope_of(db, actor_id)
    async with db.write() as s:
        need = await _load(s, ticket)
        if not can_manage(scope, need):
            raise NeedError(f"诉求 {need.ticket} 不在您负责的社区，不能分流。")
        _check(need, "triage")
        clock = taxonomy.clock(wanted)
        resolve_by = default_resolve_by(taxonomy, wanted.value, now)
        reason = (extension_reason or "").strip() or None
        if wanted is Tier.B and deadline is not None:
            today = local(now).date()
            if deadline <= today:
                raise NeedError("办结期限要晚于今天。")
            days = workdays.working_days_between(today, deadline)
            default_days = clock.deadline_default.amount if clock.deadline_default else 7
            max_days = clock.deadline_max.amount if clock.deadline_max else 15
            if days > max_days:
                raise NeedError(f"限时办理最长{max_days}个工作日，{deadline.month}-{deadline.day} 超出了。")
            if days > default_days and not reason:
                raise NeedError(f"超过{default_days}个工作日需要登记延期理由：分流 <编号> B 月-日 <理由>。")
            resolve_by = workdays.end_of_working_day(deadline)
        elif wanted is not Tier.B:
            reason = None
        before = need.status
        need.tier = wanted.value
        need.resolve_by = resolve_by
        need.extension_reason = reason
        need.triaged_at = now
        _first_response(need, now)
        if need.state in (S.REPORTED, S.REOPENED):
            need.status = S.TRIAGED.value
        note = f"社区已受理，按「{wanted.label}」办理"
        if resolve_by is not None:
            note += f"，预计{format_date(resolve_by)}前办结"
        await _record(s, need, now, "triaged", actor_id=actor_id, actor_label=await _actor_label(s, scope, need),
                      from_status=before, note=note, tier=wanted.value, extension_reason=reason)
        s.add(audit_entry(now, _actor(actor_id), "need.triage", "need", need.ticket, tier=wanted.value,
                          resolve_by=resolve_by, extension_reason=reason))
    return need


async def reclassify_need(db: Database, actor_id: int, ticket: str, item_code: str, now: dt.datetime) -> Need:
    """改类: correct the sub-item (internal; the tier stays unless the need is still untriaged)."""
    item = load_taxonomy().get(item_code)
    if item is None:
        raise NeedError(f"没有分类代码 {item_code}，代码形如 JZ-05。")
    scope = await scope_of(db, actor_id)
    async with db.write() as s:
        need = await _load_managed(s, scope, ticket, "reclassify")
        before_code = need.item_code
        need.item_code, need.category = item.code, item.category
        if need.triaged_at is None:
            need.tier = item.default_tier.value
        await _record(s, need, now, "reclassified", actor_id=actor_id, public=False,
                      actor_label=await _actor_label(s, scope, need), from_status=need.status,
                      note=f"分类由 {before_code} 改为 {item.label}")
        s.add(audit_entry(now, _actor(actor_id), "need.reclassify", "need", need.ticket,
                          before=before_code, after=item.code))
    return need


async def assignable_people(db: Database, community_id: int) -> list[tuple[Resident, str]]:
    """Grid workers of the community's grids and the community's staff, with their role label."""
    async with db.read() as s:
        grid_ids = list((await s.exec(select(Grid.id).where(Grid.community_id == community_id))).all())
        query = (
            select(Resident, RoleGrant.role)
            .join(RoleGrant, RoleGrant.resident_id == Resident.id)
            .where(
                RoleGrant.revoked_at.is_(None),
                or_(
                    (RoleGrant.role == Role.COMMUNITY_STAFF.value) & (RoleGrant.scope_id == community_id),
                    (RoleGrant.role == Role.GRID_WORKER.value) & col(RoleGrant.scope_id).in_(grid_ids or [-1]),
                ),
            )
            .order_by(Resident.id)
            .limit(200)
        )
        rows = (await s.exec(query)).all()
    seen: dict[int, tuple[Resident, str]] = {}
    for resident, role in rows:
        seen.setdefault(resident.id, (resident, Role(role).label))
    return list(seen.values())


async def assign_need(
    db: Database, actor_id: int, ticket: str, who: str, now: dt.datetime, *, person_id: int | None = None
) -> tuple[Need, Resident]:
    """指派 to a grid worker or staff member of the need's community, named by phone or name (or, from a numbered
    list in chat, by `person_id`)."""
    scope = await scope_of(db, actor_id)
    async with db.read() as s:
        peek = await _load(s, ticket, lock=False)
    if not can_manage(scope, peek):
        raise NeedError(f"诉求 {peek.ticket} 不在您负责的社区。")
    who = who.strip()
    people = [(r, label) for r, label in await assignable_people(db, peek.community_id)
              if (r.id == person_id if person_id is not None else who and (r.phone == who or r.name == who))]
    if not people:
        raise NeedError(f"本社区没有叫「{who}」的网格员或工作人员，请核对姓名或手机号。")
    if len(people) > 1:
        raise NeedError(f"本社区有{len(people)}位「{who}」，请改用手机号指派。")
    person, label = people[0]
    async with db.write() as s:
        need = await _load(s, ticket)
        if need.state is S.REPORTED:
            raise NeedError(NOT_TRIAGED.format(ticket=need.ticket))
        _check(need, "assign")
        before = need.status
        need.assignee_id = person.id
        need.status = S.ASSIGNED.value
        _first_response(need, now)
        event = await _record(s, need, now, "assigned", actor_id=actor_id, from_status=before,
                              actor_label=await _actor_label(s, scope, need), note=f"已安排{label}负责办理",
                              assignee=person.id)
        if person.id != actor_id and person.id not in await _followers(s, need.id):
            text = (f"【新派单】{need.ticket}\n{summary_line(need, 30)}\n"
                    f"请尽快处理，回复「进展 {need.ticket} 内容」登记进展，「办结 {need.ticket} 内容」办结。")
            await _outbox(s, need, event, person.id, NoticeKind.NEED_ASSIGNED, text, now)
        s.add(audit_entry(now, _actor(actor_id), "need.assign", "need", need.ticket, assignee=person.id))
    return need, person


async def escalate_need(db: Database, actor_id: int, ticket: str, department_code: str, now: dt.datetime) -> Need:
    """上报区级: hand the need to a district department; its staff then see it in 区级待办."""
    scope = await scope_of(db, actor_id)
    async with db.write() as s:
        need = await _load_managed(s, scope, ticket, "escalate")
        dept = (await s.exec(select(Department).where(Department.code == department_code.strip().upper()))).first()
        if dept is None or dept.kind != "district":
            raise NeedError(f"没有代码为 {department_code} 的区级部门。")
        before = need.status
        taxonomy = load_taxonomy()
        need.tier, need.department_id, need.status = Tier.DISTRICT.value, dept.id, S.ESCALATED.value
        need.resolve_by = None
        need.triaged_at = need.triaged_at or now
        _first_response(need, now)
        event = await _record(s, need, now, "escalated", actor_id=actor_id, from_status=before,
                              actor_label=await _actor_label(s, scope, need),
                              note=f"已上报{dept.name}，由区级部门统筹办理", department=dept.code)
        need.feedback_due_at = feedback_due(taxonomy, Tier.DISTRICT.value, now)
        staff = await s.exec(
            select(RoleGrant.resident_id).where(
                RoleGrant.role == Role.DISTRICT_STAFF.value, RoleGrant.scope_id == dept.id,
                RoleGrant.revoked_at.is_(None),
            ).limit(STAFF_NOTICE_LIMIT)
        )
        text = f"【区级待办】{need.ticket}\n{summary_line(need, 30)}\n回复「区级待办」查看。"
        followers = set(await _followers(s, need.id))
        told = [rid for rid in dict.fromkeys(staff.all()) if rid not in followers]  # followers have this event's
        await _outbox(s, need, event, told, NoticeKind.NEED_ESCALATED, text, now)  # notice already
        s.add(audit_entry(now, _actor(actor_id), "need.escalate", "need", need.ticket, department=dept.code))
    return need


async def reject_need(db: Database, actor_id: int, ticket: str, reason: str, now: dt.datetime) -> Need:
    """驳回 (不予受理) with the reason and where to go instead; the resident is told exactly that."""
    reason = reason.strip()
    if len(reason) < 2:
        raise NeedError("驳回需要写明理由，以及居民可以去哪里办理。")
    scope = await scope_of(db, actor_id)
    async with db.write() as s:
        need = await _load_managed(s, scope, ticket, "reject")
        before = need.status
        need.status = S.REJECTED.value
        need.resolve_by = need.respond_by = None
        _first_response(need, now)
        await _record(s, need, now, "rejected", actor_id=actor_id, from_status=before,
                      actor_label=await _actor_label(s, scope, need), note=f"未受理：{reason}")
        s.add(audit_entry(now, _actor(actor_id), "need.reject", "need", need.ticket, reason=reason))
    return need


async def merge_need(db: Database, actor_id: int, ticket: str, target_ticket: str, now: dt.datetime) -> Need:
    """合并 a duplicate into another open need of the same community; its followers follow the target."""
    scope = await scope_of(db, actor_id)
    async with db.write() as s:
        need = await _load(s, ticket)
        target = await _load(s, target_ticket)
        if need.id == target.id:
            raise NeedError("不能把诉求合并到它自己。")
        if not can_manage(scope, need) or target.community_id != need.community_id:
            raise NeedError("只能合并您所在社区的两条诉求。")
        _check(need, "merge")
        if not target.is_open:
            raise NeedError(f"目标诉求 {target.ticket} 已「{target.state.label}」，请合并到仍在办理的诉求。")
        existing = set(await _followers(s, target.id))
        for follower in (await s.exec(select(NeedFollower).where(NeedFollower.need_id == need.id))).all():
            if follower.resident_id not in existing:
                s.add(NeedFollower(need_id=target.id, resident_id=follower.resident_id, role="seconder",
                                   created_at=now))
        target.supporters += need.supporters
        target.updated_at = now
        s.add(target)
        before = need.status
        need.status, need.merged_into_id = S.MERGED.value, target.id
        need.resolve_by = need.respond_by = None
        _first_response(need, now)
        await _record(s, need, now, "merged", actor_id=actor_id, from_status=before,
                      actor_label=await _actor_label(s, scope, need),
                      note=f"与相同问题合并办理，后续进展请看诉求 {target.ticket}", target=target.ticket)
        s.add(audit_entry(now, _actor(actor_id), "need.merge", "need", need.ticket, target=target.ticket))
    return need


async def post_progress(db: Database, actor_id: int, ticket: str, note: str, now: dt.datetime) -> Need:
    """进展: a public progress note; followers are told."""
    note = note.strip()
    if len(note) < 2:
        raise NeedError("请写上进展内容，例如：进展 20261127-0001 已联系物业，明天上午维修。")
    scope = await scope_of(db, actor_id)
    async with db.write() as s:
        need = await _load_handled(s, scope, actor_id, ticket, "progress")
        before = need.status
        if need.state is not S.ESCALATED:
            need.status = S.IN_PROGRESS.value
        _first_response(need, now)
        await _record(s, need, now, "progress", actor_id=actor_id, from_status=before,
                      actor_label=await _actor_label(s, scope, need), note=note)
        s.add(audit_entry(now, _actor(actor_id), "need.progress", "need", need.ticket, note=_clip(note)))
    return need


async def resolve_need(db: Database, actor_id: int, ticket: str, note: str, now: dt.datetime) -> Need:
    """办结 with a note of what was done; followers are asked to rate."""
    note = note.strip()
    if len(note) < 2:
        raise NeedError("办结需要写明办理结果，例如：办结 20261127-0001 已更换楼道灯。")
    scope = await scope_of(db, actor_id)
    async with db.write() as s:
        need = await _load_handled(s, scope, actor_id, ticket, "resolve")
        before = need.status
        need.status = S.RESOLVED.value
        need.resolved_at, need.rate_by = now, now + RATE_WINDOW
        _first_response(need, now)
        await _record(s, need, now, "resolved", actor_id=actor_id, from_status=before,
                      actor_label=await _actor_label(s, scope, need), note=f"已办结：{note}")
        s.add(audit_entry(now, _actor(actor_id), "need.resolve", "need", need.ticket, note=_clip(note)))
    return need


# ---------------------------------------------------------------------------------------------- residents


async def rate_need(
    db: Database, resident_id: int, ticket: str, rating: str, now: dt.datetime, comment: str | None = None
) -> Need:
    """满意 / 基本满意 / 不满意. A first 不满意 reopens the need for rework (重办) with a new limit and tells the
    handler; the second rating is final."""
    if rating not in RATINGS:
        raise NeedError("评价请选择：满意、基本满意或不满意。")
    comment = _clip(comment) if comment and comment.strip() else None
    async with db.write() as s:
        need = await _load(s, ticket)
        rater = need.reporter_id or need.filed_by_id  # 代报 for someone unbound: the leader rates for them
        if resident_id != rater:
            if resident_id in await _followers(s, need.id):
                raise NeedError(f"诉求 {need.ticket} 由反映人本人评价，您会继续收到进展通知。")
            raise NeedError(f"没有找到编号为 {need.ticket} 的诉求，请核对编号。")
        _check(need, "rate")
        before = need.status
        need.rating, need.rating_comment, need.rated_at = rating, comment, now
        need.ratings_given += 1
        note = f"居民评价：{rating}" + (f"（{comment}）" if comment else "")
        if rating == "不满意" and need.ratings_given == 1:
            taxonomy = load_taxonomy()
            need.status = S.REOPENED.value
            need.rework_count += 1
            need.resolved_at = need.rate_by = None
            need.respond_by = respond_due(taxonomy, need.tier, now)
            need.responded_at = None
            need.resolve_by = default_resolve_by(taxonomy, need.tier, now)
            need.reminded_at = need.chased_at = need.district_reported_at = None
            event = await _record(s, need, now, "reopened", actor_id=resident_id, actor_label="居民",
                                  from_status=before, note=note + "，重新办理", rating=rating)
            staff = [need.assignee_id] if need.assignee_id else await _staff_of(s, need.community_id)
            text = (f"【重办】{need.ticket} 居民评价不满意\n{_clip(comment or '（未留言）', 40)}\n"
                    f"请重新办理，回复「进度 {need.ticket}」查看。")
            followers = set(await _followers(s, need.id))
            told = [rid for rid in staff if rid is not None and rid not in followers]
            await _outbox(s, need, event, told, NoticeKind.NEED_REWORK, text, now)
        else:
            need.status = S.RATED.value
            need.rate_by = None
            await _record(s, need, now, "rated", actor_id=resident_id, actor_label="居民",
                          from_status=before, note=note, rating=rating)
    return need


CLOSE_BATCH = 200  # needs closed per run of the scheduler job (needs.close_unrated)
CLOSED_NOTE = "评价期已过，未收到评价，诉求已归档"


def closed_query(now: dt.datetime, limit: int = CLOSE_BATCH):
    """The resolved needs whose rating window is over, oldest first: one range of the (status, rate_by) index,
    so the scan touches the due rows only, however many needs the district has."""
    return (
        select(Need)
        .where(Need.rate_by <= now, Need.status == S.RESOLVED.value)
        .order_by(Need.rate_by)
        .limit(limit)
    )


async def close_unrated(db: Database, now: dt.datetime, limit: int = CLOSE_BATCH) -> int:
    """Close the resolved needs whose rating window (``rate_by``) is over, at most `limit` in one transaction;
    returns how many closed. Each gets its timeline event, an audit row and one notice to whoever could have
    rated it (the reporter, or the leader who filed it for an unbound resident).

    Closes a need once, however often and on however many schedulers it runs: the due rows are locked
    (PostgreSQL: rows another transaction holds — a resident rating right now, another run — are skipped;
    SQLite serialises write transactions), and a need rated or closed meanwhile no longer matches."""
    async with db.write() as s:
        due = list((await s.exec(closed_query(now, limit).with_for_update(skip_locked=True))).all())
        for need in due:
            before = need.status
            need.status, need.rate_by = S.CLOSED.value, None
            event = await _record(s, need, now, "closed", actor_id=None, actor_label="系统", from_status=before,
                                  note=CLOSED_NOTE, notify=False)
            rater = need.reporter_id or need.filed_by_id
            if rater is not None:
                await _outbox(s, need, event, rater, NoticeKind.NEED_UPDATE, follower_notice(need, event), now)
            s.add(audit_entry(now, _actor(None), "need.close", "need", need.ticket, reason="rating window over"))
    return len(due)


# ---------------------------------------------------------------------------------------------- reading


async def find_need(db: Database, ticket: str) -> Need | None:
    normal = normalise_ticket(ticket)
    if normal is None:
        return None
    async with db.read() as s:
        return (await s.exec(select(Need).where(Need.ticket == normal))).first()


async def merge_candidates(db: Database, need: Need, limit: int = MERGE_CANDIDATES) -> list[Need]:
    """Open needs of the same sub-item in the same community, newest first: where a duplicate may be merged."""
    query = (
        select(Need)
        .where(
            Need.community_id == need.community_id,
            Need.item_code == need.item_code,
            Need.id != need.id,
            col(Need.status).in_([s.value for s in OPEN_STATUSES]),
        )
        .order_by(Need.id.desc())
        .limit(limit)
    )
    async with db.read() as s:
        return list((await s.exec(query)).all())


async def is_follower(db: Database, need_id: int, resident_id: int) -> bool:
    async with db.read() as s:
        row = await s.exec(
            select(NeedFollower.id).where(NeedFollower.need_id == need_id, NeedFollower.resident_id == resident_id)
        )
        return row.first() is not None


async def timeline(db: Database, need_id: int, *, public_only: bool = True, limit: int = 12) -> list[NeedEvent]:
    """The latest `limit` events, oldest first."""
    async with db.read() as s:
        query = select(NeedEvent).where(NeedEvent.need_id == need_id)
        if public_only:
            query = query.where(NeedEvent.public.is_(True))
        rows = list((await s.exec(query.order_by(NeedEvent.id.desc()).limit(limit))).all())
    return rows[::-1]


@dataclass(frozen=True)
class Page:
    needs: list[Need]
    total: int
    page: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


async def list_needs(
    db: Database,
    *,
    page: int = 1,
    size: int = PAGE_SIZE,
    statuses: frozenset[NeedStatus] | set[NeedStatus] | None = None,
    community_ids: set[int] | None = None,
    building_ids: set[int] | None = None,
    grid_ids: set[int] | None = None,
    department_ids: set[int] | None = None,
    follower_id: int | None = None,
    overdue_at: dt.datetime | None = None,
    newest_first: bool = False,
) -> Page:
    """One page of needs filtered by place, state, follower and lateness. Place filters are OR-ed (a leader's
    buildings or a grid worker's grids); None means no filter on it; an empty set matches nothing."""
    conditions = []
    if statuses is not None:
        conditions.append(col(Need.status).in_([s.value for s in statuses]))
    places = []
    for column, ids in ((Need.community_id, community_ids), (Need.building_id, building_ids),
                        (Need.grid_id, grid_ids), (Need.department_id, department_ids)):
        if ids is not None:
            places.append(col(column).in_(sorted(ids) or [-1]))
    if places:
        conditions.append(or_(*places))
    if follower_id is not None:
        conditions.append(col(Need.id).in_(select(NeedFollower.need_id).where(NeedFollower.resident_id == follower_id)))
    if overdue_at is not None:
        conditions.append(col(Need.status).in_([s.value for s in OPEN_STATUSES]))
        conditions.append(
            or_(Need.resolve_by < overdue_at, (Need.responded_at.is_(None)) & (Need.respond_by < overdue_at))
        )
    page = max(1, page)
    order = Need.id.desc() if newest_first else Need.id
    async with db.read() as s:
        total = (await s.exec(select(func.count()).select_from(Need).where(*conditions))).one()
        rows = await s.exec(select(Need).where(*conditions).order_by(order).offset((page - 1) * size).limit(size))
        return Page(list(rows.all()), int(total), page, size)


async def community_ids_by_code(db: Database, code_or_name: str) -> set[int]:
    async with db.read() as s:
        rows = await s.exec(select(Community.id).where(or_(Community.code == code_or_name,
                                                           Community.name == code_or_name)))
        return set(rows.all())


async def names_for(db: Database, needs: list[Need]) -> dict[str, dict[int, str]]:
    """Display names of the communities, buildings, departments and assignees of some needs."""
    ids = {
        "community": {n.community_id for n in needs},
        "building": {n.building_id for n in needs if n.building_id},
        "department": {n.department_id for n in needs if n.department_id},
        "resident": {n.assignee_id for n in needs if n.assignee_id},
    }
    out: dict[str, dict[int, str]] = {k: {} for k in ids}
    async with db.read() as s:
        for key, model in (("community", Community), ("building", Building), ("department", Department)):
            if ids[key]:
                rows = await s.exec(select(model).where(col(model.id).in_(ids[key])))
                out[key] = {r.id: r.name for r in rows.all()}
        if ids["resident"]:
            rows = await s.exec(select(Resident).where(col(Resident.id).in_(ids["resident"])))
            out["resident"] = {r.id: f"{r.name or '未留名'}({mask_phone(r.phone)})" for r in rows.all()}
    return out


# ---------------------------------------------------------------------------------------------- other features
# Used by storage/projects.py and storage/survey.py (issue 8): the same rules, inside the caller's transaction.

PROJECT_RESOLVABLE = OPEN_STATUSES
SURVEY_FALLBACK_ITEM = "PB-04"  # when the classifier finds nothing; staff correct it at triage


async def resolve_from_project(s, need_id: int, actor: str, note: str, now: dt.datetime) -> Need | None:
    """A service project answering this need was completed: the need is resolved (its residents are asked to
    rate it). A need that is no longer open (merged, rejected, already resolved) is left as it is → None."""
    need = (await s.exec(select(Need).where(Need.id == need_id).with_for_update())).first()
    if need is None or need.state not in PROJECT_RESOLVABLE:
        return None
    before = need.status
    need.status = S.RESOLVED.value
    need.resolved_at, need.rate_by = now, now + RATE_WINDOW
    _first_response(need, now)
    await _record(s, need, now, "resolved", actor_id=None, actor_label="服务项目", from_status=before,
                  note=f"已办结：{note}", project_actor=actor)
    s.add(audit_entry(now, actor, "need.resolve", "need", need.ticket, note=_clip(note), via="project"))
    return need


async def create_from_survey(s, db: Database, *, resident_id: int, community_id: int, text: str,
                             now: dt.datetime) -> Need:
    """A low satisfaction score with a comment becomes a need of the resident's community to follow up."""
    resident = await s.get(Resident, resident_id)
    building = await s.get(Building, resident.building_id) if resident and resident.building_id else None
    item = default_classifier().propose(text)
    need = await _create(
        s, db, now, text=_clip(text, MAX_TEXT), item_code=item.code if item else SURVEY_FALLBACK_ITEM,
        community_id=community_id, grid_id=building.grid_id if building else None,
        building_id=building.id if building else None, room=resident.room if resident else None,
        reporter_id=resident_id, filed_by_id=None, contact_name=resident.name if resident else None,
        contact_phone=resident.phone if resident else None, attachments=Attachments(),
    )
    await _record(s, need, now, "reported", actor_id=resident_id, actor_label="满意度问卷", from_status=None,
                  note="由满意度问卷意见转为诉求")
    return need
