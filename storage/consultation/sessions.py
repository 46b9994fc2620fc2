"""A community's standing arrangements (defaults) and its sessions: creating them ahead of time, and the staff's
changes — editing (more seats promote from the waitlist), moving and cancelling (everyone booked is told)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from storage.actor import Actor
from storage.broadcast import AudienceKind, Broadcast, BroadcastStatus, create_system_broadcast, enqueue_batch
from storage.clock import QuietHours, local
from storage.consultation.bookings import _booked_count, _promote
from storage.consultation.common import MEETING_DAY, TZ, ConsultationError, _check_staff, _lock_session, when_text
from storage.consultation_tables import ConsultationDefaults, ConsultationSession, SessionStatus
from storage.db import Database
from storage.org import Community
from storage.outbox import NoticeKind
from storage.policy import Can, refusal
from storage.roles import audit_entry


def _session_times(d: ConsultationDefaults, year: int, month: int) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
    start = dt.datetime.combine(dt.date(year, month, MEETING_DAY), dt.time.fromisoformat(d.start_time), tzinfo=TZ)
    opens = dt.datetime.combine(dt.date(year, month, d.registration_opens_day), dt.time(9, 0), tzinfo=TZ)
    cutoff = dt.datetime.combine(dt.date(year, month, d.topic_cutoff_day) + dt.timedelta(days=1), dt.time(0), tzinfo=TZ)
    return start, opens, cutoff


# ---------------------------------------------------------------- defaults and sessions


DEFAULT_FIELDS = {"start_time", "duration_minutes", "venue", "capacity", "reserved_seats",
                  "registration_opens_day", "topic_cutoff_day"}


def _validate_defaults(d: ConsultationDefaults) -> None:
    try:
        dt.time.fromisoformat(d.start_time)
    except ValueError as exc:
        raise ConsultationError("开始时间请写成 14:30 这样的格式。") from exc
    if not d.venue.strip():
        raise ConsultationError("地点不能为空。")
    if not 1 <= d.capacity <= 1000:
        raise ConsultationError("总名额应在1到1000之间。")
    if not 0 <= d.reserved_seats <= d.capacity:
        raise ConsultationError("预留名额不能超过总名额。")
    if not 1 <= d.registration_opens_day < MEETING_DAY:
        raise ConsultationError("报名开放日应是当月1日到16日之间。")
    if not 1 <= d.topic_cutoff_day < MEETING_DAY:
        raise ConsultationError("议题截止日应是当月1日到16日之间。")
    if not 15 <= d.duration_minutes <= 600:
        raise ConsultationError("会议时长应在15到600分钟之间。")


async def set_defaults(
    db: Database, community_id: int, now: dt.datetime, actor: Actor, **changes
) -> ConsultationDefaults:
    """A community's standing arrangements, for those who run it (storage.policy: Can.RUN_COMMUNITY)."""
    unknown = set(changes) - DEFAULT_FIELDS
    if unknown:
        raise ConsultationError(f"无法设置：{', '.join(sorted(unknown))}")
    async with db.write() as s:
        if await s.get(Community, community_id) is None:
            raise ConsultationError("没有这个社区。")
        if (why := refusal(actor, Can.RUN_COMMUNITY, community_id)) is not None:
            raise ConsultationError(why)
        q = select(ConsultationDefaults).where(ConsultationDefaults.community_id == community_id)
        row = (await s.exec(q)).first()
        if row is None:
            row = ConsultationDefaults(community_id=community_id, updated_at=now)
        for name, value in changes.items():
            setattr(row, name, value)
        _validate_defaults(row)
        row.updated_at, row.updated_by = now, actor.name
        s.add(row)
        s.add(audit_entry(now, actor.name, "consultation.defaults", "community", community_id, **changes))
        await s.flush()
        return row


async def get_defaults(db: Database, community_id: int) -> ConsultationDefaults | None:
    async with db.read() as s:
        q = select(ConsultationDefaults).where(ConsultationDefaults.community_id == community_id)
        return (await s.exec(q)).first()


async def ensure_session(db: Database, community_id: int, year: int, month: int, now: dt.datetime) -> bool:
    """Create the session of that month from the community's defaults, once. True if it was created."""
    key = f"{year:04d}-{month:02d}"
    try:
        async with db.write() as s:
            q = select(ConsultationSession.id).where(
                ConsultationSession.community_id == community_id, ConsultationSession.month == key
            )
            if (await s.exec(q)).first() is not None:
                return False
            d = (
                await s.exec(select(ConsultationDefaults).where(ConsultationDefaults.community_id == community_id))
            ).first()
            if d is None:
                return False
            start, opens, cutoff = _session_times(d, year, month)
            s.add(ConsultationSession(
                community_id=community_id, month=key, starts_at=start, duration_minutes=d.duration_minutes,
                venue=d.venue, capacity=d.capacity, reserved_seats=d.reserved_seats, registration_opens_at=opens,
                topic_cutoff_at=cutoff, created_at=now, updated_at=now,
            ))
            await s.flush()
            s.add(audit_entry(now, "system", "consultation.create", "community", community_id, month=key))
        return True
    except IntegrityError:
        return False  # another worker made it first


def _months_ahead(now: dt.datetime, months: int) -> list[tuple[int, int]]:
    here = local(now)
    out = []
    y, m = here.year, here.month
    for _ in range(months + 1):
        out.append((y, m))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


async def create_upcoming_sessions(db: Database, now: dt.datetime, months: int = 1, limit: int = 500) -> int:
    """This month's session (if the 17th is still ahead) and the next `months` months', for every community
    with defaults. Idempotent."""
    async with db.read() as s:
        q = select(ConsultationDefaults.community_id).order_by(ConsultationDefaults.community_id).limit(limit)
        communities = list((await s.exec(q)).all())
    made = 0
    for community_id in communities:
        made += await create_upcoming_sessions_for(db, community_id, now, months)
    return made


async def create_upcoming_sessions_for(db: Database, community_id: int, now: dt.datetime, months: int = 1) -> int:
    """One community's sessions for this month (17th still ahead) and the next `months` months."""
    here = local(now)
    made = 0
    for y, m in _months_ahead(now, months):
        if (y, m) == (here.year, here.month) and here.day > MEETING_DAY:
            continue
        made += await ensure_session(db, community_id, y, m, now)
    return made
# ---------------------------------------------------------------- staff changes to a session


EDITABLE = {"venue", "capacity", "reserved_seats", "duration_minutes"}


async def edit_session(db: Database, session_id: int, actor: Actor, now: dt.datetime,
                       quiet: QuietHours | None = None, **changes) -> ConsultationSession:
    """议事设置: venue, capacity, reserved seats, duration. More seats promote from the waitlist."""
    unknown = set(changes) - EDITABLE
    if unknown:
        raise ConsultationError(f"无法修改：{', '.join(sorted(unknown))}")
    async with db.write() as s:
        session = await _lock_session(s, session_id)
        _check_staff(actor, session.community_id)
        if session.status != SessionStatus.SCHEDULED:
            raise ConsultationError("这场议事已取消或已结束，不能再修改。")
        for name, value in changes.items():
            setattr(session, name, value)
        if not session.venue.strip():
            raise ConsultationError("地点不能为空。")
        if not 1 <= session.capacity <= 1000:
            raise ConsultationError("总名额请填1到1000之间的数。")
        if not 0 <= session.reserved_seats <= session.capacity:  # say the numbers: 总名额 5 under 预留 10 read odd
            raise ConsultationError(f"预留名额（{session.reserved_seats}）不能超过总名额（{session.capacity}），"
                                    "请先调小预留名额。")
        booked = await _booked_count(s, session_id)
        if booked > session.seats:
            raise ConsultationError(f"已有{booked}人预约，可预约名额不能少于{booked}。")
        session.updated_at = now
        s.add(session)
        s.add(audit_entry(now, actor.name, "consultation.edit", "consultation_session", session_id, **changes))
        await s.flush()
        await _promote(s, session, now, quiet)
        return session


def _move_key(session_id: int, starts_at: dt.datetime) -> str:
    return f"cs:{session_id}:move:{int(starts_at.timestamp())}"


def _cancel_key(session_id: int) -> str:
    return f"cs:{session_id}:cancel"


async def move_session(db: Database, session_id: int, starts_at: dt.datetime, actor: Actor,
                       now: dt.datetime) -> ConsultationSession:
    """改期: a new start; everyone booked or waitlisted is told. Reminders follow the new date."""
    if starts_at <= now:
        raise ConsultationError("新的时间必须在现在之后。")
    async with db.write() as s:
        session = await _lock_session(s, session_id)
        _check_staff(actor, session.community_id)
        if session.status != SessionStatus.SCHEDULED:
            raise ConsultationError("这场议事已取消或已结束，不能改期。")
        old = session.starts_at
        session.starts_at, session.updated_at = starts_at, now
        session.remind_2d_at = session.remind_day_at = None
        if session.topic_cutoff_at > starts_at:
            session.topic_cutoff_at = starts_at
        if session.registration_opens_at >= starts_at:
            # Moved before its booking would open (a session of February brought forward to next week): booking
            # opens now, or nobody could ever book it.
            session.registration_opens_at = now
        s.add(session)
        s.add(audit_entry(now, actor.name, "consultation.move", "consultation_session", session_id,
                          old=local(old).isoformat(), new=local(starts_at).isoformat()))
        text = (f"【议事改期】原定{when_text(old, now)}的社区议事改到{when_text(starts_at, now)}，"
                f"地点：{session.venue}。\n您的预约和签到码不变。如不能参加，请回复「议事」取消预约。")
        await create_system_broadcast(
            s, _move_key(session_id, starts_at), NoticeKind.CONSULTATION,
            AudienceKind.SESSION_ALL, [session_id], "议事预约居民（改期通知）", text, now, urgent=True,
        )
        return session


async def cancel_session(db: Database, session_id: int, reason: str, actor: Actor,
                         now: dt.datetime) -> ConsultationSession:
    """取消议事: with a reason; everyone booked or waitlisted is told."""
    reason = reason.strip()
    if not reason:
        raise ConsultationError("请说明取消的原因。")
    async with db.write() as s:
        session = await _lock_session(s, session_id)
        _check_staff(actor, session.community_id)
        if session.status != SessionStatus.SCHEDULED:
            raise ConsultationError("这场议事已取消或已结束。")
        session.status, session.cancel_reason, session.updated_at = SessionStatus.CANCELLED, reason[:200], now
        s.add(session)
        s.add(audit_entry(now, actor.name, "consultation.cancel", "consultation_session", session_id, reason=reason))
        text = (f"【议事取消】{when_text(session.starts_at)}的社区议事取消了。\n原因：{reason[:200]}\n"
                "给您带来不便，敬请谅解。")
        await create_system_broadcast(
            s, _cancel_key(session_id), NoticeKind.CONSULTATION, AudienceKind.SESSION_ALL, [session_id],
            "议事预约居民（取消通知）", text, now, urgent=True,
        )
        return session


NOTICE_BATCHES = 10  # a session's audience is at most its capacity (≤1000): two batches of the broadcast job


async def queue_change_notices(
    db: Database, session_id: int, now: dt.datetime, *, moved_to: dt.datetime | None = None
) -> int | None:
    """Write the outbox rows of a move (`moved_to`: the new start) or a cancellation now, rather than at the
    broadcast job's next run, so the staff who made it can be told how many were reached. Returns the broadcast
    whose rows they are (storage.outbox.delivery_counts), None if there is no such notice. Safe beside the job:
    each batch locks the broadcast and goes on from its cursor."""
    key = _move_key(session_id, moved_to) if moved_to is not None else _cancel_key(session_id)
    async with db.read() as s:
        broadcast_id = (await s.exec(select(Broadcast.id).where(Broadcast.dedup_key == key))).first()
    if broadcast_id is None:
        return None
    for _ in range(NOTICE_BATCHES):
        await enqueue_batch(db, broadcast_id, now)
        async with db.read() as s:
            row = await s.get(Broadcast, broadcast_id)
        if row is None or row.enqueued_at is not None or row.status == BroadcastStatus.CANCELLED:
            break
    return broadcast_id
