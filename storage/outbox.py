"""The outbox: every notification is a row written in the same transaction as the change that caused it.

A sender (bot/push) drains it; the idempotency key makes writing the same notification twice a no-op.
`enqueue` is the one way any domain queues a notice: a kind from `NoticeKind` (its Chinese label, its default
priority), one row or many, insert-ignore on the key, quiet hours by priority, and a wake-up for this process's
sender after the commit. The operations here are the only way rows change state:

    enqueue()           pending          (in the caller's transaction)
    claim_due()         pending → sending          (committed before any API call; see bot/push)
    finish()            sending → sent | pending (retry) | waiting | failed
    recover_stale()     sending (lease expired) → unknown     (never re-sent automatically: at-most-once)
    take_waiting()      waiting → shown      (the resident's next message shows them)
    resend()            failed | unknown | urgent waiting → pending    (staff: sent once more; audited)
    give_up()           failed | unknown | urgent waiting → cancelled  (staff told the resident another way)
    drop_unsent()       pending | waiting → cancelled  (the news went stale, e.g. a review closed)
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import weakref
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Index, Integer, Select, String, and_, cast, event, func, literal, or_, true, update
from sqlalchemy import text as sql_text
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.actor import Actor
from storage.clock import QuietHours
from storage.db import Database, insert_for
from storage.kv import KeyValueStore, fetched
from storage.policy import Can, allows
from storage.residents import Resident
from storage.roles import audit_entry
from storage.settings import current_settings


class NoticePriority(enum.IntEnum):
    """Claimed in this order (lowest first). Quiet hours hold back all but URGENT."""

    URGENT = 0  # plans changed or something went wrong: sent at once, day or night
    NORMAL = 1
    DIGEST = 2  # summaries and mass invitations: after everything else in a claim


class NoticeKind(enum.StrEnum):
    """Every kind of notification, with its label (the template's 通知类型, staff's 投递失败 list) and its usual
    priority (a notice may be queued more urgent than that: `enqueue(..., priority=...)`).

    The values are stored in `outbox.kind` and are the names `STEWARD_TEMPLATES` uses: never change one."""

    label: str
    priority: NoticePriority

    def __new__(cls, value: str, label: str, priority: NoticePriority = NoticePriority.NORMAL) -> NoticeKind:
        member = str.__new__(cls, value)
        member._value_ = value
        member.label = label
        member.priority = priority
        return member

    # needs (storage/needs/) and their clocks (storage/need_clocks.py)
    NEED_UPDATE = "need_update", "诉求进展"
    NEED_ASSIGNED = "need_assigned", "新派单"
    NEED_ESCALATED = "need_escalated", "诉求上报"
    NEED_REWORK = "need_rework", "诉求退回重办", NoticePriority.URGENT
    REMIND = "remind", "办理提醒"
    CHASE = "chase", "督办通知"
    REPORT = "report", "督办上报"
    FEEDBACK = "feedback", "进展反馈"
    RATING = "rating", "满意度评价"
    DIGEST = "digest", "每日汇总", NoticePriority.DIGEST
    # the gateway's answer to a message that took longer than WeChat waits: the resident is waiting for it
    REPLY = "reply", "消息回复", NoticePriority.URGENT
    # 阳光17议, broadcasts
    CONSULTATION = "consultation", "议事通知"
    BROADCAST = "broadcast", "社区广播"
    BROADCAST_PROGRESS = "broadcast_progress", "广播进度"
    # volunteer time bank, identity claims
    ACTIVITY = "activity", "志愿活动"
    POINTS = "points", "志愿积分"
    BINDING = "binding", "绑定核实"
    # projects, the year-end review, the survey
    PROJECT_PUBLISHED = "project_published", "项目发布"
    PROJECT_CLAIMED = "project_claimed", "项目承接"
    PROJECT_ASSIGNED = "project_assigned", "项目指派"
    PROJECT_PROGRESS = "project_progress", "项目进展"
    # submitted for 验收 (staff), accepted or returned (the unit, the residents who asked)
    PROJECT_ACCEPTANCE = "project_acceptance", "项目验收"
    REVIEW_OPENED = "review_opened", "年度评议", NoticePriority.DIGEST
    REVIEW_CLOSED = "review_closed", "评议结果"
    SURVEY_INVITE = "survey_invite", "问卷邀请", NoticePriority.DIGEST
    # the monthly report (storage/reports.py): where staff get last month's spreadsheet
    MONTHLY_REPORT = "monthly_report", "月度报告", NoticePriority.DIGEST

    @classmethod
    def label_of(cls, kind: str, default: str = "通知") -> str:
        """The label of a stored kind (a row written by an older version may carry a kind no longer made)."""
        try:
            return cls(kind).label
        except ValueError:
            return default


class OutboxStatus:
    PENDING = "pending"  # waiting to be tried (again) at next_attempt_at
    SENDING = "sending"  # claimed by a sender; see bot/push for the crash protocol
    SENT = "sent"
    WAITING = "waiting"  # no channel open: shown at the resident's next message
    SHOWN = "shown"  # delivered in a passive reply ("您有 N 条新消息")
    FAILED = "failed"  # gave up after the retry limit; staff can see it
    CANCELLED = "cancelled"
    # The sender died between claiming the row and recording the answer: it may or may not have reached the
    # resident. Never re-sent automatically (a duplicate is worse than a gap); staff review it.
    UNKNOWN = "unknown"


# Rows staff must look at ("投递失败"): shown by `steward outbox status` and the morning digest.
NEEDS_REVIEW = (OutboxStatus.FAILED, OutboxStatus.UNKNOWN)


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_resident_status", "resident_id", "status"),  # 0004_push
        Index("ix_outbox_claim", "status", "priority", "next_attempt_at", "id"),  # 0012_notice_priority
        # A broadcast's rows by state (0029_outbox_broadcast): its progress and 停止广播 read the index, not the
        # whole outbox as a key prefix did. Only broadcasts' rows are in it.
        Index("ix_outbox_broadcast_status", "broadcast_id", "status",
              sqlite_where=sql_text("broadcast_id IS NOT NULL"), postgresql_where=sql_text("broadcast_id IS NOT NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=128, unique=True)
    resident_id: int = Field(foreign_key="resident.id", index=True)
    kind: str = Field(max_length=32)
    text: str
    payload: str = Field(default="{}")  # JSON: template fields, links
    status: str = Field(default=OutboxStatus.PENDING, max_length=16)
    attempts: int = 0
    # pending: when to try; sending: when the claim's lease runs out.
    next_attempt_at: dt.datetime
    last_error: str | None = Field(default=None, max_length=255)
    channel: str | None = Field(default=None, max_length=16)  # text | template | reply
    created_at: dt.datetime
    sent_at: dt.datetime | None = None
    claimed_by: str | None = Field(default=None, max_length=32)  # the sender holding a sending row (0004_push)
    # NoticePriority: claimed lowest first (0012_notice_priority; rows from before it are normal)
    priority: int = Field(default=int(NoticePriority.NORMAL), sa_column_kwargs={"server_default": "1"})
    broadcast_id: int | None = None  # the broadcast the row is one of (storage.broadcast; a plain id, no FK)


def needs_staff():
    """The rows staff must look at (投递失败, the morning digest): failed and unknown ones, and urgent ones left
    waiting for the resident's next message — news like a cancelled activity may be too late by then, so staff
    may want to phone them (and 放弃) or resend once a template is configured."""
    return or_(
        col(OutboxMessage.status).in_(NEEDS_REVIEW),
        and_(OutboxMessage.status == OutboxStatus.WAITING, OutboxMessage.priority == int(NoticePriority.URGENT)),
    )


def _staff_must_see(row: OutboxMessage) -> bool:
    return row.status in NEEDS_REVIEW or (
        row.status == OutboxStatus.WAITING and row.priority == int(NoticePriority.URGENT)
    )


# -- prompt drain: an in-process wake-up after a commit that wrote notifications ----------------------------
#
# Only a hint for senders in this process (others find the rows on their next tick), so a module-level
# registry is fine here: losing a wake-up costs a few seconds, never a message.

_wakers: weakref.WeakSet = weakref.WeakSet()


class OutboxWaker:
    """Register one with `add_waker`; `.event` is set after any local commit that wrote outbox rows."""

    def __init__(self) -> None:
        import asyncio

        self.event = asyncio.Event()

    def wake(self) -> None:
        self.event.set()


def add_waker(waker: OutboxWaker) -> None:
    _wakers.add(waker)


def _wake_all(_session: Any = None) -> None:
    for waker in list(_wakers):
        waker.wake()


def _wake_after_commit(session: AsyncSession) -> None:
    sync = session.sync_session
    if not sync.info.get("outbox_wake"):
        sync.info["outbox_wake"] = True
        event.listen(sync, "after_commit", _wake_all, once=True)


# -- writing ------------------------------------------------------------------------------------------------


def current_quiet_hours() -> QuietHours:
    """The quiet hours this process runs with (STEWARD_QUIET_HOURS: `storage.settings.current_settings`)."""
    return _parse_quiet(current_settings().quiet_hours)


@functools.lru_cache(maxsize=8)
def _parse_quiet(spec: str) -> QuietHours:
    return QuietHours.parse(spec)


def _scheduled(kind: NoticeKind | str, priority: NoticePriority | None, quiet: QuietHours | None,
               now: dt.datetime) -> tuple[NoticeKind, NoticePriority, dt.datetime]:
    """A notice's kind (a free string is refused here: every kind has a label and a priority), its priority (the
    kind's unless given) and when it is due: at once if urgent, else once the quiet hours it falls in are over."""
    kind = NoticeKind(kind)
    priority = NoticePriority(kind.priority if priority is None else priority)
    return kind, priority, now if priority is NoticePriority.URGENT else (quiet or current_quiet_hours()).release(now)


async def enqueue(
    session: AsyncSession,
    kind: NoticeKind,
    text: str,
    recipients: Iterable[tuple[int, str]],
    now: dt.datetime,
    *,
    payload: dict[str, Any] | None = None,
    priority: NoticePriority | None = None,
    quiet: QuietHours | None = None,
    broadcast_id: int | None = None,
) -> int:
    """Queue one notice for each (resident_id, idempotency key) in `recipients`, inside the caller's transaction
    (one row: `[(resident_id, key)]`). Returns how many rows are new: a key queued before is skipped (INSERT …
    ON CONFLICT DO NOTHING), so a retried or repeated change never notifies twice.

    `priority` defaults to the kind's. URGENT rows are due at once; others written inside the quiet hours are due
    when they end (`quiet`, else the process's STEWARD_QUIET_HOURS). After the commit the senders in this process
    are woken, so a due notice leaves within moments, not at the next tick.
    `payload` may carry `template` (WeChat template fields, e.g. {"first": .., "keyword1": ..}) and `url`.
    """
    kind, priority, due = _scheduled(kind, priority, quiet, now)
    body = json.dumps(payload or {}, ensure_ascii=False)
    keys = {key[:128]: resident_id for resident_id, key in recipients}  # a key twice in one call: one row
    if not keys:
        return 0
    rows = [
        {
            "idempotency_key": key,
            "resident_id": resident_id,
            "kind": kind.value,
            "text": text,
            "payload": body,
            "status": OutboxStatus.PENDING,
            "attempts": 0,
            "priority": int(priority),
            "next_attempt_at": due,
            "created_at": now,
            "broadcast_id": broadcast_id,
        }
        for key, resident_id in keys.items()
    ]
    stmt = (
        insert_for(session, OutboxMessage)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(OutboxMessage.id)  # the rows actually written (batched into multi-row INSERTs)
    )
    written = len((await session.exec(stmt, params=rows)).all())
    if written and due <= now:
        _wake_after_commit(session)
    return written


async def enqueue_each(
    session: AsyncSession,
    kind: NoticeKind,
    text: str,
    resident_ids: Select,
    key_prefix: str,
    now: dt.datetime,
    *,
    priority: NoticePriority | None = None,
    quiet: QuietHours | None = None,
    broadcast_id: int | None = None,
) -> int:
    """`enqueue` for every resident id `resident_ids` selects (a select of one column), keyed `key_prefix` + id:
    the database writes the rows from the select itself (INSERT … SELECT), so nothing crosses the wire per row —
    a broadcast's batch of 2,000 was 2,000 rows of 12 values encoded, sent and parsed. A key queued before is
    skipped, as in `enqueue`. Returns how many rows are new."""
    kind, priority, due = _scheduled(kind, priority, quiet, now)
    table = OutboxMessage.__table__
    ids = resident_ids.subquery()
    resident_id = ids.c[0]
    values = {
        "idempotency_key": literal(key_prefix, String) + cast(resident_id, String),
        "resident_id": resident_id,
        "kind": literal(kind.value, String),
        "text": literal(text, table.c.text.type),
        "payload": literal("{}", table.c.payload.type),
        "status": literal(str(OutboxStatus.PENDING), String),
        "attempts": literal(0, Integer),
        "priority": literal(int(priority), Integer),
        "next_attempt_at": literal(due, table.c.next_attempt_at.type),
        "created_at": literal(now, table.c.created_at.type),
        "broadcast_id": literal(broadcast_id, Integer),
    }
    # `WHERE true`: SQLite reads an ON CONFLICT after a bare SELECT as a join's ON.
    source = select(*(value.label(name) for name, value in values.items())).where(true())
    stmt = (insert_for(session, OutboxMessage).from_select(list(values), source)
            .on_conflict_do_nothing(index_elements=["idempotency_key"]))
    written = (await session.exec(stmt)).rowcount
    if written and due <= now:
        _wake_after_commit(session)
    return written


# -- the sender's side ----------------------------------------------------------------------------------------


async def claim_due(
    db: Database, now: dt.datetime, limit: int, claimer: str, lease: dt.timedelta,
    record: Sequence[Outcome] = (),
) -> list[OutboxMessage]:
    """Mark up to `limit` due pending rows as sending (lease until now + lease) for `claimer`, and commit.

    `record`: the outcomes of this claimer's previous claim, recorded (as `finish` does) in the same transaction,
    so a sender going batch after batch never holds two claims, and pays one commit per batch, not two.

    Urgent rows first: due rows are taken by priority, then oldest due, then id (the index ix_outbox_claim walks
    that order), and returned by priority then id, the order the sender starts them in.

    Concurrent senders never claim the same row: PostgreSQL skips rows another claimer has locked;
    SQLite serialises write transactions (BEGIN IMMEDIATE).
    """
    due = (
        select(OutboxMessage.id)
        .where(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.priority, OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    async with db.write() as session:
        if record:
            await _record(session, claimer, record, now)
        if db.is_sqlite:
            chosen = col(OutboxMessage.id).in_(due)  # one statement: SQLite evaluates the subquery once
        else:
            # Lock the ids first: PostgreSQL may re-run a LIMIT … SKIP LOCKED subquery inside an UPDATE and so
            # claim more than `limit` rows.
            ids = list((await session.exec(due.with_for_update(skip_locked=True))).all())
            if not ids:
                return []
            chosen = col(OutboxMessage.id).in_(ids)
        claim = (
            update(OutboxMessage)
            .where(chosen, OutboxMessage.status == OutboxStatus.PENDING)
            .values(status=OutboxStatus.SENDING, claimed_by=claimer, next_attempt_at=now + lease)
            .returning(OutboxMessage)
            .execution_options(synchronize_session=False)
        )
        rows = list((await session.exec(claim)).scalars().all())
    return sorted(rows, key=lambda row: (row.priority, row.id))


@dataclass
class Outcome:
    """What the sender learnt about one claimed row."""

    id: int
    status: str  # sent | pending | waiting | failed
    channel: str | None = None
    error: str | None = None
    next_attempt_at: dt.datetime | None = None
    attempted: bool = True  # False: the API was not called (e.g. no channel): attempts unchanged


async def finish(db: Database, claimer: str, outcomes: Sequence[Outcome], now: dt.datetime) -> int:
    """Record the outcomes of one claim in one transaction. Only rows still claimed by `claimer` change
    (a row another process recovered as `unknown` becomes `sent` if we did send it). Returns rows changed."""
    async with db.write() as session:
        return await _record(session, claimer, outcomes, now)


async def _record(session: AsyncSession, claimer: str, outcomes: Sequence[Outcome], now: dt.datetime) -> int:
    """finish() inside the caller's transaction. Outcomes that write the same values share one UPDATE (a drained
    batch is mostly "sent by text")."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for o in outcomes:
        error = o.error[:255] if o.error else None
        groups[(o.status, o.channel, error, o.next_attempt_at, o.attempted)].append(o.id)
    changed = 0
    for (status, channel, error, next_attempt_at, attempted), ids in groups.items():
        values: dict[str, Any] = {"status": status, "last_error": error}
        if channel:
            values["channel"] = channel
        if attempted:
            values["attempts"] = OutboxMessage.attempts + 1
        if status == OutboxStatus.SENT:
            values["sent_at"] = now
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        if status != OutboxStatus.SENDING:
            values["claimed_by"] = None
        allowed = [OutboxStatus.SENDING] + ([OutboxStatus.UNKNOWN] if status == OutboxStatus.SENT else [])
        for start in range(0, len(ids), 500):
            result = await session.exec(
                update(OutboxMessage)
                .where(
                    col(OutboxMessage.id).in_(ids[start : start + 500]),
                    OutboxMessage.claimed_by == claimer,
                    col(OutboxMessage.status).in_(allowed),
                )
                .values(**values)
            )
            changed += result.rowcount or 0
    return changed


async def recover_stale(db: Database, now: dt.datetime, limit: int = 500) -> int:
    """Sending rows whose lease ran out (their sender died): mark them unknown for staff review.

    They are NOT made pending again: the dead sender may have delivered them and WeChat has no idempotency key
    for customer-service messages, so re-sending could deliver twice. At most once; a gap is flagged instead.
    """
    async with db.write() as session:
        ids = list(
            (
                await session.exec(
                    select(OutboxMessage.id)
                    .where(OutboxMessage.status == OutboxStatus.SENDING, OutboxMessage.next_attempt_at < now)
                    .limit(limit)
                )
            ).all()
        )
        if not ids:
            return 0
        result = await session.exec(
            update(OutboxMessage)
            .where(col(OutboxMessage.id).in_(ids), OutboxMessage.status == OutboxStatus.SENDING)
            .values(status=OutboxStatus.UNKNOWN, last_error="发送进程中断，无法确认是否送达，需人工核对")
        )
        return result.rowcount or 0


async def recipients(db: Database, resident_ids: Iterable[int]) -> dict[int, tuple[Any, int]]:
    """{resident_id: (Resident, customer-service texts sent to them since their last message)}, in one query:
    what the sender needs to pick a channel for a batch (see bot/push)."""
    ids = sorted(set(resident_ids))
    if not ids:
        return {}
    texts_in_window = (
        select(func.count())
        .select_from(OutboxMessage)
        .where(
            OutboxMessage.resident_id == Resident.id,
            OutboxMessage.status == OutboxStatus.SENT,
            OutboxMessage.channel == "text",
            OutboxMessage.sent_at >= Resident.last_contact_at,
        )
        .correlate(Resident)
        .scalar_subquery()
    )
    async with db.read() as session:
        rows = (await session.exec(select(Resident, texts_in_window).where(col(Resident.id).in_(ids)))).all()
    return {resident.id: (resident, int(count or 0)) for resident, count in rows}


# -- the resident's next message ------------------------------------------------------------------------------


async def count_waiting(db: Database, resident_id: int) -> int:
    async with db.read() as session:
        return (
            await session.exec(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.resident_id == resident_id, OutboxMessage.status == OutboxStatus.WAITING)
            )
        ).one()


# "This resident has no waiting notices", kept in the key-value store so an ordinary message costs no
# database work for notices. Only the sender makes a row `waiting`, and it drops the flag when it does;
# a lost flag (Redis restart) only means one count query.
NONE_WAITING_TTL = 300.0


def none_waiting_key(openid: str) -> str:
    """The flag's key, by openid: the resident's lock fetches it with their flow state (Engine.read_also)."""
    return f"notices:none:{openid}"


async def forget_none_waiting(db: Database, kv: KeyValueStore, resident_ids: Iterable[int]) -> None:
    ids = sorted(set(resident_ids))
    if not ids:
        return
    async with db.read() as session:
        openids = (await session.exec(select(Resident.openid).where(col(Resident.id).in_(ids)))).all()
    if openids:
        await kv.delete(*(none_waiting_key(o) for o in openids))


async def take_waiting_cached(
    db: Database, kv: KeyValueStore, resident_id: int, openid: str, now: dt.datetime, limit: int = 3,
    known: Mapping[str, str | None] | None = None,
) -> tuple[list[str], int]:
    """take_waiting, skipping the database while the store says nothing waits for this resident. `known`: store
    keys already read (the resident's lock fetched the flag)."""
    key = none_waiting_key(openid)
    if await fetched(kv, key, known):
        return [], 0
    async with db.read() as session:
        waiting = (
            await session.exec(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.resident_id == resident_id, OutboxMessage.status == OutboxStatus.WAITING)
            )
        ).one()
    if not waiting:
        await kv.set(key, "1", ttl=NONE_WAITING_TTL)
        return [], 0
    return await take_waiting(db, resident_id, now, limit)


WAITING_SCAN = 200  # waiting notices read at once to find those a newer one about the same need replaces


def _subject_of(row: OutboxMessage) -> tuple[str, int] | None:
    """What a notice is about, when a newer notice about it replaces it: a need (its payload's need_id: a step's
    notice, a rating reminder, a 督办 chase) or a service project (its key, project:<id>:…: 待接单 beside
    验收通过); None for any other notice (a broadcast, a points notice: each stands alone)."""
    if '"need_id"' in row.payload:
        try:
            need_id = json.loads(row.payload).get("need_id")
        except (ValueError, AttributeError):
            need_id = None
        if isinstance(need_id, int):
            return "need", need_id
    parts = row.idempotency_key.split(":", 2)
    if parts[0] == "project" and len(parts) > 1 and parts[1].isdigit():
        return "project", int(parts[1])
    return None


async def take_waiting(db: Database, resident_id: int, now: dt.datetime, limit: int = 3) -> tuple[list[str], int]:
    """The oldest `limit` waiting notices, marked shown (so they are shown once), and how many were waiting.

    Of several waiting about one need (or one project) only the newest is shown: it says where it stands now, and
    a backlog of a need's every step (受理, 派单, 办结, a rating request for a need since closed) had run to 17
    notices shown three at a time. The older ones are marked shown by channel "superseded"; the timeline (进度)
    keeps them all."""
    waiting = (OutboxMessage.resident_id == resident_id, OutboxMessage.status == OutboxStatus.WAITING)
    async with db.write() as session:
        query = select(OutboxMessage).where(*waiting).order_by(OutboxMessage.created_at, OutboxMessage.id)
        if not db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        rows = list((await session.exec(query.limit(WAITING_SCAN))).all())
        if not rows:
            return [], 0
        about = {row.id: _subject_of(row) for row in rows}
        newest = {subject: row_id for row_id, subject in about.items() if subject is not None}  # rows come oldest first
        replaced = {row_id for row_id, subject in about.items() if subject is not None and newest[subject] != row_id}
        if replaced:
            await session.exec(
                update(OutboxMessage).where(col(OutboxMessage.id).in_(replaced), *waiting)
                .values(status=OutboxStatus.SHOWN, channel="superseded", sent_at=now)
            )
        total = (await session.exec(select(func.count()).select_from(OutboxMessage).where(*waiting))).one()
        texts = []
        for row in [r for r in rows if r.id not in replaced][:limit]:
            result = await session.exec(
                update(OutboxMessage)
                .where(OutboxMessage.id == row.id, OutboxMessage.status == OutboxStatus.WAITING)
                .values(status=OutboxStatus.SHOWN, channel="reply", sent_at=now)
            )
            if result.rowcount:
                texts.append(row.text)
        return texts, total


# -- what became of a staff action's notices -------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryCounts:
    """Where the notices of one action stand (cancelled rows are left out: nobody is waiting for them)."""

    delivered: int = 0  # sent as a text or a template, or shown in a reply
    waiting: int = 0  # no channel open: shown at the resident's next message
    sending: int = 0  # not tried yet, or being tried right now (retries included)
    failed: int = 0  # failed or unknown: staff see them in 投递失败

    @property
    def total(self) -> int:
        return self.delivered + self.waiting + self.sending + self.failed


_DELIVERED = (OutboxStatus.SENT, OutboxStatus.SHOWN)
_SENDING = (OutboxStatus.PENDING, OutboxStatus.SENDING)


async def delivery_counts(
    db: Database, *, keys: Iterable[str] = (), prefix: str | None = None, broadcast_id: int | None = None
) -> DeliveryCounts:
    """The delivery states of the rows with these idempotency keys, or whose key starts with `prefix` (one
    action's notices share it: `activity:7:cancelled:`), or of one broadcast's rows."""
    wanted = [key[:128] for key in keys]
    if prefix is None and broadcast_id is None and not wanted:
        return DeliveryCounts()
    counts: dict[str, int] = defaultdict(int)
    async with db.read() as session:
        for start in range(0, max(len(wanted), 1), 500):
            query = select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
            if broadcast_id is not None:
                query = query.where(OutboxMessage.broadcast_id == broadcast_id)
            if prefix is not None:
                query = query.where(col(OutboxMessage.idempotency_key).startswith(prefix, autoescape=True))
            if wanted:
                query = query.where(col(OutboxMessage.idempotency_key).in_(wanted[start : start + 500]))
            for status, n in (await session.exec(query)).all():
                counts[status] += int(n)
    return DeliveryCounts(
        delivered=sum(counts[s] for s in _DELIVERED),
        waiting=counts[OutboxStatus.WAITING],
        sending=sum(counts[s] for s in _SENDING),
        failed=sum(counts[s] for s in NEEDS_REVIEW),
    )


async def drop_unsent(session: AsyncSession, kind: NoticeKind, prefix: str) -> int:
    """Cancel the notices of `kind` under this key prefix that have not gone out yet (pending, or waiting for the
    resident's next message), inside the caller's transaction: what they say is no longer true (a review that
    closed still inviting votes). Rows being sent right now are left to the sender. Returns rows cancelled."""
    result = await session.exec(
        update(OutboxMessage)
        .where(
            OutboxMessage.kind == NoticeKind(kind).value,
            col(OutboxMessage.idempotency_key).startswith(prefix, autoescape=True),
            col(OutboxMessage.status).in_([OutboxStatus.PENDING, OutboxStatus.WAITING]),
        )
        .values(status=OutboxStatus.CANCELLED, last_error="内容已过时，未发送")
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


# -- staff views ---------------------------------------------------------------------------------------------


async def status_counts(db: Database) -> dict[str, int]:
    async with db.read() as session:
        rows = (
            await session.exec(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))
        ).all()
    return {status: count for status, count in rows}


async def status_kind_counts(db: Database) -> dict[tuple[str, str], int]:
    """Rows by (status, kind): what /metrics shows of the outbox."""
    async with db.read() as session:
        query = select(OutboxMessage.status, OutboxMessage.kind, func.count()).group_by(
            OutboxMessage.status, OutboxMessage.kind)
        rows = (await session.exec(query)).all()
    return {(status, kind): count for status, kind, count in rows}


async def needing_review(
    db: Database, limit: int = 20, offset: int = 0, resident_ids: Iterable[int] | None = None
) -> list[OutboxMessage]:
    """The rows staff must see (`needs_staff`), newest first, a page at a time; optionally only for these
    residents."""
    async with db.read() as session:
        query = select(OutboxMessage).where(needs_staff())
        if resident_ids is not None:
            query = query.where(col(OutboxMessage.resident_id).in_(list(resident_ids)))
        query = query.order_by(col(OutboxMessage.created_at).desc(), col(OutboxMessage.id).desc())
        return list((await session.exec(query.offset(offset).limit(limit))).all())



# -- staff deciding about failed deliveries ("投递失败", `steward outbox resend|drop`) ------------------------------
#
# A failed or unknown row waits for staff, who decide one of two things:
#
# * RESEND (重发): they judge it did not arrive. It goes back to `pending`, due now, with a fresh retry budget
#   (attempts 0, last_error cleared; the audit row keeps what it was), unclaimed, and the sender sends it once
#   more like any due row. It keeps its idempotency key: it is the same notification, still written once. For
#   an `unknown` row this is the one way it is ever sent again, and only because someone chose so (it may have
#   arrived the first time: the chat says so before asking).
# * GIVE UP (放弃, "reviewed"): they told the resident another way, or it no longer matters. It leaves the review
#   list as `cancelled`: never sent, and broadcast progress counts it as settled. Its last_error is kept.
#
# Each decision is one transaction with its audit row; a row already decided (a second tap, a colleague) is
# refused, so two staff cannot both resend it.

REVIEW_PAGE_MAX = 50


class OutboxReviewError(Exception):
    """A refused acknowledgement; `reason` is Chinese."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ReviewItem:
    """A row to review, with the resident it was for (the phone unmasked: mask it to show it)."""

    message: OutboxMessage
    resident_name: str | None
    resident_phone: str | None
    community_id: int | None


def _review_query(query, community_ids: Iterable[int] | None):
    query = query.join(Resident, Resident.id == OutboxMessage.resident_id).where(needs_staff())
    if community_ids is not None:
        query = query.where(col(Resident.community_id).in_(sorted(community_ids)))
    return query


async def review_page(
    db: Database, actor: Actor, limit: int = 5, offset: int = 0
) -> tuple[list[ReviewItem], int]:
    """A page of the rows staff must see (`needs_staff`) of residents of the communities the actor runs (an
    admin: all), newest first, and how many there are in all. Someone who runs no community sees nothing."""
    community_ids = actor.communities
    if community_ids is not None and not community_ids:
        return [], 0
    limit = max(1, min(limit, REVIEW_PAGE_MAX))
    async with db.read() as session:
        total = (await session.exec(_review_query(select(func.count()).select_from(OutboxMessage),
                                                  community_ids))).one()
        query = _review_query(select(OutboxMessage, Resident.name, Resident.phone, Resident.community_id),
                              community_ids)
        query = query.order_by(col(OutboxMessage.created_at).desc(), col(OutboxMessage.id).desc())
        rows = (await session.exec(query.offset(max(0, offset)).limit(limit))).all()
    return [ReviewItem(message, name, phone, community) for message, name, phone, community in rows], int(total)


async def review_item(db: Database, message_id: int, actor: Actor) -> ReviewItem | None:
    """One row still waiting for a decision, if its resident is in a community the actor runs."""
    community_ids = actor.communities
    if community_ids is not None and not community_ids:
        return None
    query = _review_query(select(OutboxMessage, Resident.name, Resident.phone, Resident.community_id),
                          community_ids).where(OutboxMessage.id == message_id)
    async with db.read() as session:
        found = (await session.exec(query)).first()
    return ReviewItem(*found) if found else None


async def _decide(
    db: Database, message_id: int, actor: Actor, now: dt.datetime, action: str, values: dict[str, Any],
    wake: bool = False,
) -> OutboxMessage:

    async with db.write() as session:
        row = await session.get(OutboxMessage, message_id, with_for_update=True)
        if row is None:
            raise OutboxReviewError("没有找到这条消息。")
        resident = await session.get(Resident, row.resident_id)
        if not allows(actor, Can.RUN_COMMUNITY, resident.community_id if resident is not None else None):
            raise OutboxReviewError("这条消息的收件人不在您负责的社区。")
        if not _staff_must_see(row):
            raise OutboxReviewError("这条消息已经处理过了。")
        previous = {"previous_status": row.status, "attempts": row.attempts, "last_error": row.last_error or ""}
        result = await session.exec(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id, needs_staff())
            .values(**values)
        )
        if not result.rowcount:
            raise OutboxReviewError("这条消息已经处理过了。")
        session.add(audit_entry(now, actor.name, action, "outbox", message_id, resident_id=row.resident_id,
                                kind=row.kind, **previous))
        if wake:
            _wake_after_commit(session)
        await session.refresh(row)
        return row


async def resend(db: Database, message_id: int, actor: Actor, now: dt.datetime) -> OutboxMessage:
    """Staff judge a failed or unknown row undelivered: back to pending, due now, attempts 0, so the sender sends
    it once more (audit `outbox.resend`). Staff of the resident's community, an admin or the command line."""
    return await _decide(
        db, message_id, actor, now, "outbox.resend",
        dict(status=OutboxStatus.PENDING, attempts=0, next_attempt_at=now, last_error=None, claimed_by=None,
             channel=None, sent_at=None),
        wake=True,
    )


async def give_up(db: Database, message_id: int, actor: Actor, now: dt.datetime) -> OutboxMessage:
    """Staff have dealt with a failed or unknown row another way: it leaves the review list (status cancelled,
    last_error kept), audit `outbox.review`. Staff of the resident's community, an admin or the command line."""
    return await _decide(db, message_id, actor, now, "outbox.review",
                         dict(status=OutboxStatus.CANCELLED, claimed_by=None))

