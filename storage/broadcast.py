"""Staff broadcasts (广播) and the fan-out that delivers them through the outbox.

A Broadcast row names its author, its audience (within the author's scope) and its text. It is a draft until
the author confirms; then the enqueue job writes one outbox row per recipient in bounded batches, each with the
idempotency key ``bc:{broadcast_id}:{resident_id}``, and advances a cursor (the last resident id written) in the
same transaction. A crash mid-way rolls back only the batch in flight; the next run starts from the cursor, and
even a lost cursor cannot send anyone a second copy — the key is unique.

Quiet hours (default 21:00–08:00) push next_attempt_at to the end of the quiet window unless the broadcast is
urgent. Progress counts come from the outbox rows themselves, found by their `broadcast_id` (indexed).

System broadcasts (author_id None) carry the consultation's reminders and notices; they have a unique
``dedup_key`` so a job that creates one twice creates it once.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass

from sqlalchemy import Index, func, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.actor import Actor
from storage.audiences import AudienceKind, audience_residents, upcoming_sessions_for
from storage.clock import DEFAULT_QUIET, QuietHours  # noqa: F401  (handlers and jobs name them from here)
from storage.consultation_tables import ConsultationSession
from storage.db import Database
from storage.org import Building, Community, Grid, Street
from storage.outbox import NoticeKind, NoticePriority, OutboxMessage, OutboxStatus, enqueue, enqueue_each
from storage.policy import Can, allows
from storage.residents import Resident
from storage.roles import Role, audit_entry

BATCH_SIZE = 500  # outbox rows written per transaction
# A job run writes batches until it has run RUN_SECONDS (or written BATCHES_PER_RUN of them), then yields to the
# next tick (the job runs every 5 s). A cap of 20 batches (10,000 rows) a run made 100,000 residents wait ~50 s
# for their rows while each run took under half a second (bench/scale.py).
BATCHES_PER_RUN = 400
RUN_SECONDS = 3.0
MAX_TEXT = 600  # a broadcast fits a phone screen
PROGRESS_EVERY = dt.timedelta(minutes=5)


class BroadcastStatus:
    DRAFT = "draft"  # composed, previewed, not confirmed: nothing is sent
    CONFIRMED = "confirmed"  # confirmed; the enqueue job has not started
    SENDING = "sending"  # outbox rows being written / delivered
    CANCELLED = "cancelled"
    DONE = "done"


class BroadcastError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Broadcast(SQLModel, table=True):
    __tablename__ = "broadcast"
    __table_args__ = (Index("ix_broadcast_status", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    author_id: int | None = Field(default=None, foreign_key="resident.id", index=True)  # None: the system
    audience_kind: str = Field(max_length=16)
    audience_ids: str = Field(default="[]")  # JSON list of ids for the kind
    audience_label: str = Field(default="", max_length=128)  # "1号楼、2号楼" as shown to the author
    text: str
    kind: str = Field(default=NoticeKind.BROADCAST.value, max_length=32)  # outbox kind (a NoticeKind)
    urgent: bool = False
    status: str = Field(default=BroadcastStatus.DRAFT, max_length=16)
    recipient_count: int = 0  # exact at preview, recounted at confirm
    enqueued_count: int = 0
    cursor: int = 0  # the highest resident id already written to the outbox
    dedup_key: str | None = Field(default=None, max_length=64, unique=True)
    created_at: dt.datetime
    confirmed_at: dt.datetime | None = None
    enqueued_at: dt.datetime | None = None  # every recipient has an outbox row
    cancelled_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    progress_at: dt.datetime | None = None  # last progress report to the author
    progress_reports: int = 0


def _priority(urgent: bool) -> NoticePriority | None:
    """An urgent broadcast (and its progress reports) goes out at once; otherwise its kind's priority."""
    return NoticePriority.URGENT if urgent else None


# ---------------------------------------------------------------- audiences


@dataclass(frozen=True)
class Audience:
    kind: str
    ids: tuple[int, ...]
    label: str


def _ids(broadcast: Broadcast) -> list[int]:
    return [int(i) for i in json.loads(broadcast.audience_ids or "[]")]


def _audience_query(kind: str, ids: list[int]):
    """A select of resident ids for the audience (bound, subscribed)."""
    base = select(Resident.id).where(col(Resident.bound_at).is_not(None), Resident.subscribed == True)  # noqa: E712
    if kind == AudienceKind.COMMUNITY:
        return base.where(col(Resident.community_id).in_(ids))
    if kind == AudienceKind.BUILDINGS:
        return base.where(col(Resident.building_id).in_(ids))
    if kind == AudienceKind.GRIDS:
        buildings = select(Building.id).where(col(Building.grid_id).in_(ids))
        return base.where(col(Resident.building_id).in_(buildings))
    if kind == AudienceKind.STREET:
        communities = select(Community.id).where(col(Community.street_id).in_(ids))
        return base.where(col(Resident.community_id).in_(communities))
    if kind in (AudienceKind.SESSION, AudienceKind.SESSION_ALL, AudienceKind.OPTED_IN):
        return audience_residents(kind, ids)
    raise BroadcastError("未知的发送对象。")


async def count_audience(db: Database, kind: str, ids: list[int]) -> int:
    async with db.read() as s:
        sub = _audience_query(kind, ids).subquery()
        return int((await s.exec(select(func.count()).select_from(sub))).one())


async def audience_choices(db: Database, actor: Actor, community_id: int | None = None,
                           now: dt.datetime | None = None) -> list[Audience]:
    """What this staff member may broadcast to, as numbered choices (bounded: a community's parts; the
    consultation sessions still ahead of `now`, nearest first)."""
    out: list[Audience] = []
    async with db.read() as s:
        if allows(actor, Can.REACH_DISTRICT):
            for street in (await s.exec(select(Street).order_by(Street.id).limit(30))).all():
                out.append(Audience(AudienceKind.STREET, (street.id,), f"{street.name}全体居民"))
        communities = sorted(actor.ids(Role.COMMUNITY_STAFF))
        for cid in communities[:5]:
            community = await s.get(Community, cid)
            if community is None:
                continue
            out.append(Audience(AudienceKind.COMMUNITY, (cid,), f"{community.name}全体居民"))
            grids = (await s.exec(select(Grid).where(Grid.community_id == cid).order_by(Grid.id).limit(20))).all()
            for grid in grids:
                out.append(Audience(AudienceKind.GRIDS, (grid.id,), f"{community.name}{grid.name}"))
            q = select(Building).where(Building.community_id == cid).order_by(Building.id).limit(40)
            for building in (await s.exec(q)).all():
                out.append(Audience(AudienceKind.BUILDINGS, (building.id,), f"{community.name}{building.name}"))
    if communities:
        for session_id, label in await upcoming_sessions_for(db, communities[:5], now):
            out.append(Audience(AudienceKind.SESSION, (session_id,), label))
    return out


async def _in_scope(s: AsyncSession, actor: Actor, kind: str, ids: list[int]) -> bool:
    """Whether the actor may reach this audience (storage.policy): district staff and admins reach everyone; a
    community's staff reach their community's residents, its grids, buildings and sessions."""
    if allows(actor, Can.REACH_DISTRICT):
        return True
    if not ids:
        return False
    if kind == AudienceKind.COMMUNITY:
        communities = list(ids)
    elif kind in (AudienceKind.BUILDINGS, AudienceKind.GRIDS, AudienceKind.SESSION):
        table = {AudienceKind.BUILDINGS: Building, AudienceKind.GRIDS: Grid,
                 AudienceKind.SESSION: ConsultationSession}[kind]
        communities = list((await s.exec(select(table.community_id).where(col(table.id).in_(ids)))).all())
        if len(communities) != len(set(ids)):
            return False  # some of them do not exist
    else:
        return False  # streets are for district staff
    return all(allows(actor, Can.RUN_COMMUNITY, cid) for cid in set(communities))


# ---------------------------------------------------------------- the broadcast's life


async def save_draft(
    db: Database, actor: Actor, text: str, audience: Audience, now: dt.datetime,
    *, urgent: bool = False, draft_id: int | None = None,
) -> Broadcast:
    """Create (or rewrite) the actor's draft with the exact recipient count as of now. Nothing is sent."""
    text = text.strip()
    if not text:
        raise BroadcastError("通知内容不能为空。")
    if len(text) > MAX_TEXT:
        raise BroadcastError(f"通知内容太长（{len(text)}字），请控制在{MAX_TEXT}字以内。")
    if not actor.is_staff:
        raise BroadcastError("只有社区或区级工作人员可以发送广播。")
    author_id = actor.resident_id
    async with db.write() as s:
        if not await _in_scope(s, actor, audience.kind, list(audience.ids)):
            raise BroadcastError("这个发送对象不在您的管辖范围内。")
        sub = _audience_query(audience.kind, list(audience.ids)).subquery()
        count = int((await s.exec(select(func.count()).select_from(sub))).one())
        row = await s.get(Broadcast, draft_id) if draft_id else None
        if row is None or row.author_id != author_id or row.status != BroadcastStatus.DRAFT:
            row = Broadcast(author_id=author_id, audience_kind=audience.kind, text=text, created_at=now)
        row.audience_kind = audience.kind
        row.audience_ids = json.dumps(list(audience.ids))
        row.audience_label = audience.label[:128]
        row.text, row.urgent, row.recipient_count = text, urgent, count
        s.add(row)
        await s.flush()
        return row


async def confirm(db: Database, broadcast_id: int, actor: Actor, now: dt.datetime) -> Broadcast:
    """The author's 确认发送: the draft becomes confirmed (the enqueue job takes it from here). Audited."""
    async with db.write() as s:
        row = await s.get(Broadcast, broadcast_id, with_for_update=True)
        if row is None or row.author_id != actor.resident_id:
            raise BroadcastError("没有找到这条广播草稿。")
        if row.status != BroadcastStatus.DRAFT:
            raise BroadcastError("这条广播已经确认过了，不会重复发送。")
        ids = _ids(row)
        if not await _in_scope(s, actor, row.audience_kind, ids):
            raise BroadcastError("这个发送对象不在您的管辖范围内。")
        sub = _audience_query(row.audience_kind, ids).subquery()
        row.recipient_count = int((await s.exec(select(func.count()).select_from(sub))).one())
        if row.recipient_count == 0:
            raise BroadcastError("发送对象中目前没有已绑定的居民，广播未发送。")
        row.status, row.confirmed_at = BroadcastStatus.CONFIRMED, now
        s.add(row)
        s.add(audit_entry(now, actor.name, "broadcast.confirm", "broadcast", row.id,
                          audience=row.audience_label, kind=row.audience_kind, ids=ids,
                          recipients=row.recipient_count, urgent=row.urgent))
        return row


async def create_system_broadcast(
    session: AsyncSession, dedup_key: str, kind: NoticeKind, audience_kind: str, ids: list[int], label: str,
    text: str, now: dt.datetime, *, urgent: bool = False,
) -> Broadcast | None:
    """A confirmed broadcast from the system (reminders, a moved session), in the caller's transaction;
    `urgent` ones (a session moved or cancelled) go out at once, even in the quiet hours.

    Created once per dedup_key; returns None if it already exists.
    """
    existing = (await session.exec(select(Broadcast).where(Broadcast.dedup_key == dedup_key))).first()
    if existing is not None:
        return None
    row = Broadcast(
        author_id=None, audience_kind=audience_kind, audience_ids=json.dumps(ids), audience_label=label[:128],
        text=text, kind=NoticeKind(kind).value, urgent=urgent, status=BroadcastStatus.CONFIRMED, dedup_key=dedup_key,
        created_at=now, confirmed_at=now,
    )
    sub = _audience_query(audience_kind, ids).subquery()
    row.recipient_count = int((await session.exec(select(func.count()).select_from(sub))).one())
    session.add(row)
    await session.flush()
    session.add(audit_entry(now, "system", "broadcast.system", "broadcast", row.id,
                            audience=label, kind=audience_kind, ids=ids, recipients=row.recipient_count,
                            dedup_key=dedup_key))
    return row


async def enqueue_batch(db: Database, broadcast_id: int, now: dt.datetime, quiet: QuietHours | None = None,
                        batch_size: int = BATCH_SIZE) -> int:
    """Write the next batch of outbox rows for one broadcast, in one transaction. Returns rows written."""
    async with db.write() as s:
        row = await s.get(Broadcast, broadcast_id, with_for_update=True)
        if row is None or row.status not in (BroadcastStatus.CONFIRMED, BroadcastStatus.SENDING):
            return 0
        if row.enqueued_at is not None:
            return 0
        audience = _audience_query(row.audience_kind, _ids(row))
        page = audience.where(Resident.id > row.cursor).order_by(Resident.id).limit(batch_size).subquery()
        last, count = (await s.exec(select(func.max(page.c.id), func.count()).select_from(page))).one()
        written = 0
        if count:
            # The page again, as a range: the rows are written from it by the database, not sent from here.
            written = await enqueue_each(
                s, NoticeKind(row.kind), row.text, audience.where(Resident.id > row.cursor, Resident.id <= last),
                f"bc:{row.id}:", now, priority=_priority(row.urgent), quiet=quiet, broadcast_id=row.id,
            )
            row.cursor = last
            row.enqueued_count += written
        row.status = BroadcastStatus.SENDING
        if count < batch_size:
            row.enqueued_at = now
        s.add(row)
        return written


async def due_for_enqueue(db: Database, limit: int = 20) -> list[int]:
    async with db.read() as s:
        q = (
            select(Broadcast.id)
            .where(col(Broadcast.status).in_([BroadcastStatus.CONFIRMED, BroadcastStatus.SENDING]),
                   col(Broadcast.enqueued_at).is_(None))
            .order_by(Broadcast.urgent.desc(), Broadcast.id)
            .limit(limit)
        )
        return list((await s.exec(q)).all())


async def run_enqueue(db: Database, now: dt.datetime, quiet: QuietHours | None = None,
                      max_batches: int = BATCHES_PER_RUN, batch_size: int = BATCH_SIZE,
                      seconds: float = RUN_SECONDS) -> int:
    """The enqueue job's body: batches across the broadcasts waiting, at most max_batches and no new one after
    `seconds` (the first is always written). Each batch is its own transaction, so other writers take turns
    between them. Returns rows written."""
    total, batches = 0, 0
    deadline = time.monotonic() + seconds
    for broadcast_id in await due_for_enqueue(db):
        while batches < max_batches and (batches == 0 or time.monotonic() < deadline):
            batches += 1
            async with db.read() as s:
                before = await s.get(Broadcast, broadcast_id)
            if before is None or before.enqueued_at is not None:
                break
            total += await enqueue_batch(db, broadcast_id, now, quiet, batch_size)
            async with db.read() as s:
                after = await s.get(Broadcast, broadcast_id)
            if after is None or after.enqueued_at is not None or after.status == BroadcastStatus.CANCELLED:
                break
        if batches >= max_batches or time.monotonic() >= deadline:
            break
    return total


@dataclass(frozen=True)
class Progress:
    broadcast_id: int
    status: str
    total: int
    sent: int
    failed: int
    cancelled: int
    pending: int

    def line(self) -> str:
        return f"已发送 {self.sent} / 共 {self.total}，失败 {self.failed}"


async def progress(db: Database, broadcast_id: int) -> Progress | None:
    """Counts from the outbox rows themselves (the only truth about delivery)."""
    async with db.read() as s:
        row = await s.get(Broadcast, broadcast_id)
        if row is None:
            return None
        q = (
            select(OutboxMessage.status, func.count())
            .where(OutboxMessage.broadcast_id == broadcast_id)
            .group_by(OutboxMessage.status)
        )
        counts = dict((await s.exec(q)).all())
    sent = counts.get(OutboxStatus.SENT, 0) + counts.get(OutboxStatus.SHOWN, 0)
    failed = counts.get(OutboxStatus.FAILED, 0)
    cancelled = counts.get(OutboxStatus.CANCELLED, 0)
    pending = sum(counts.values()) - sent - failed - cancelled
    total = row.recipient_count if row.enqueued_at is None else row.enqueued_count
    if row.status == BroadcastStatus.CANCELLED and row.enqueued_at is None:
        # Stopped before every row was written: those never written are not sent either. Counted as cancelled,
        # so sent + failed + cancelled + pending is the audience (a stop before any row said 「共 0」).
        never = max(0, row.recipient_count - row.enqueued_count)
        total, cancelled = row.enqueued_count + never, cancelled + never
    return Progress(row.id, row.status, total, sent, failed, cancelled, pending)


async def cancel(db: Database, broadcast_id: int, actor: Actor, now: dt.datetime) -> Progress:
    """停止广播 by its author or an admin: no more rows are written; rows still waiting are marked cancelled (those
    sent stay sent)."""
    async with db.write() as s:
        row = await s.get(Broadcast, broadcast_id, with_for_update=True)
        if row is None or (row.author_id != actor.resident_id and not actor.is_admin):
            raise BroadcastError("没有找到您发起的这条广播。")
        if row.status in (BroadcastStatus.CANCELLED, BroadcastStatus.DONE):
            raise BroadcastError("这条广播已经结束，无法停止。")
        stopped = await s.exec(
            update(OutboxMessage)
            .where(OutboxMessage.broadcast_id == broadcast_id,
                   col(OutboxMessage.status).in_([OutboxStatus.PENDING, OutboxStatus.WAITING]))
            .values(status=OutboxStatus.CANCELLED)
        )
        row.status, row.cancelled_at = BroadcastStatus.CANCELLED, now
        s.add(row)
        s.add(audit_entry(now, actor.name, "broadcast.cancel", "broadcast", row.id,
                          audience=row.audience_label, enqueued=row.enqueued_count, stopped=stopped.rowcount))
    result = await progress(db, broadcast_id)
    assert result is not None
    return result


async def list_mine(db: Database, author_id: int, limit: int = 5) -> list[Broadcast]:
    async with db.read() as s:
        q = (
            select(Broadcast)
            .where(Broadcast.author_id == author_id, Broadcast.status != BroadcastStatus.DRAFT)
            .order_by(col(Broadcast.id).desc())
            .limit(limit)
        )
        return list((await s.exec(q)).all())


async def get(db: Database, broadcast_id: int) -> Broadcast | None:
    async with db.read() as s:
        return await s.get(Broadcast, broadcast_id)


async def authored(db: Database, actor: Actor, broadcast_id: int) -> Broadcast | None:
    """The broadcast if this actor may follow it: its author's own, any for an admin (as `cancel` allows)."""
    row = await get(db, broadcast_id)
    if row is None or (row.author_id != actor.resident_id and not actor.is_admin):
        return None
    return row


def progress_text(b: Broadcast, p: Progress, final: bool = False) -> str:
    head = f"广播#{b.id}（{b.audience_label}）"
    if p.status == BroadcastStatus.CANCELLED:
        return f"{head}已停止。\n{p.line()}，已取消 {p.cancelled}"
    if final:
        return f"{head}发送完毕。\n{p.line()}"
    return f"{head}发送中：\n{p.line()}"


async def report_progress(db: Database, now: dt.datetime, quiet: QuietHours | None = None,
                          every: dt.timedelta = PROGRESS_EVERY, limit: int = 50) -> int:
    """Push "已发送 x / 共 y，失败 z" to authors periodically, and a final one; close finished broadcasts."""
    async with db.read() as s:
        q = (
            select(Broadcast)
            .where(col(Broadcast.status).in_([BroadcastStatus.SENDING, BroadcastStatus.CANCELLED]),
                   col(Broadcast.finished_at).is_(None))
            .order_by(Broadcast.id)
            .limit(limit)
        )
        rows = list((await s.exec(q)).all())
    handled = 0
    for b in rows:
        p = await progress(db, b.id)
        if p is None:
            continue
        settled = b.enqueued_at is not None and p.pending == 0
        final = settled or b.status == BroadcastStatus.CANCELLED
        async with db.write() as s:
            row = await s.get(Broadcast, b.id, with_for_update=True)
            if row is None or row.finished_at is not None:
                continue
            if final:
                row.finished_at = now
                if row.status == BroadcastStatus.SENDING:
                    row.status = BroadcastStatus.DONE
                s.add(audit_entry(now, "system", "broadcast.finish", "broadcast", row.id, audience=row.audience_label,
                                  status=row.status, total=p.total, sent=p.sent, failed=p.failed,
                                  cancelled=p.cancelled))
                if row.author_id:
                    await enqueue(s, NoticeKind.BROADCAST_PROGRESS, progress_text(row, p, final=True),
                                  [(row.author_id, f"bcp:{row.id}:final")], now, priority=_priority(row.urgent),
                                  quiet=quiet)
                handled += 1
            elif row.author_id and (row.progress_at is None or now - row.progress_at >= every):
                row.progress_at = now
                row.progress_reports += 1
                await enqueue(s, NoticeKind.BROADCAST_PROGRESS, progress_text(row, p),
                              [(row.author_id, f"bcp:{row.id}:{row.progress_reports}")], now,
                              priority=_priority(row.urgent), quiet=quiet)
                handled += 1
            s.add(row)
    return handled
