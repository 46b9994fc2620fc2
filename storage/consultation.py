"""阳光17议: the monthly community consultation on the 17th — sessions, bookings, topics, agenda, minutes.

The operations here are the only way to change this data; each refuses with a Chinese reason
(ConsultationError) and never leaves a half-done change.

- A session per community per month on the 17th, made ahead of time from the community's ConsultationDefaults.
- Bookings: one row per resident per session (unique). Seats = capacity − reserved seats. A booking takes the
  session row's lock (PostgreSQL FOR UPDATE; SQLite serialises writers), counts seats and either books with a
  code or joins the waitlist in arrival order. Cancelling a seat promotes the first on the waitlist, who is told.
- Topics are proposed before the cut-off, may name one of the proposer's needs, and get an outcome after the
  meeting (立项 / 转办 / 答复 / 不予采纳 with a reason) which reaches the proposer.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.audiences import audience_residents, upcoming_sessions_for  # noqa: F401  (callers name them from here)
from storage.broadcast import AudienceKind, create_system_broadcast
from storage.clock import DEFAULT_TZ, QuietHours, local
from storage.consultation_tables import (
    Booking,
    BookingStatus,
    ConsultationDefaults,
    ConsultationSession,
    SessionStatus,
    Topic,
)
from storage.db import Database
from storage.needs import OPEN_STATUSES, Need, summary_line
from storage.org import Community
from storage.outbox import NoticeKind, enqueue
from storage.residents import Resident
from storage.roles import Role, Scope, audit_entry

TZ = ZoneInfo(DEFAULT_TZ)
MEETING_DAY = 17
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L
CODE_LENGTH = 6
MAX_TOPIC = 100
MAX_MINUTES = 1500
AGENDA_LIMIT = 12
LIST_LIMIT = 10


class Outcome:
    ACCEPTED = "accepted"  # 立项为服务项目
    REFERRED = "referred"  # 转交相关部门/单位
    ANSWERED = "answered"  # 现场答复
    DECLINED = "declined"  # 不予采纳（须说明理由）


OUTCOME_LABELS = {
    Outcome.ACCEPTED: "立项为服务项目",
    Outcome.REFERRED: "转交相关部门办理",
    Outcome.ANSWERED: "已现场答复",
    Outcome.DECLINED: "暂不采纳",
}


class ConsultationError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------- helpers


def _session_times(d: ConsultationDefaults, year: int, month: int) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
    start = dt.datetime.combine(dt.date(year, month, MEETING_DAY), dt.time.fromisoformat(d.start_time), tzinfo=TZ)
    opens = dt.datetime.combine(dt.date(year, month, d.registration_opens_day), dt.time(9, 0), tzinfo=TZ)
    cutoff = dt.datetime.combine(dt.date(year, month, d.topic_cutoff_day) + dt.timedelta(days=1), dt.time(0), tzinfo=TZ)
    return start, opens, cutoff


def when_text(moment: dt.datetime) -> str:
    here = local(moment)
    week = "一二三四五六日"[here.weekday()]
    return f"{here.month}月{here.day}日（周{week}）{here:%H:%M}"


def _actor(resident_id: int | None, actor: str | None = None) -> str:
    return actor or (f"resident:{resident_id}" if resident_id else "system")


def staff_communities(scope: Scope) -> list[int]:
    return sorted(scope.ids(Role.COMMUNITY_STAFF))


def _check_staff(scope: Scope | None, community_id: int) -> None:
    """None means a trusted caller (CLI, scheduler)."""
    if scope is None or scope.is_admin:
        return
    if community_id not in scope.ids(Role.COMMUNITY_STAFF):
        raise ConsultationError("这场议事不在您的管辖范围内。")


def _new_code(taken: set[str]) -> str:
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if code not in taken:
            return code


def normalise_code(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())


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
    db: Database, community_id: int, now: dt.datetime, actor: str, **changes
) -> ConsultationDefaults:
    unknown = set(changes) - DEFAULT_FIELDS
    if unknown:
        raise ConsultationError(f"无法设置：{', '.join(sorted(unknown))}")
    async with db.write() as s:
        if await s.get(Community, community_id) is None:
            raise ConsultationError("没有这个社区。")
        q = select(ConsultationDefaults).where(ConsultationDefaults.community_id == community_id)
        row = (await s.exec(q)).first()
        if row is None:
            row = ConsultationDefaults(community_id=community_id, updated_at=now)
        for name, value in changes.items():
            setattr(row, name, value)
        _validate_defaults(row)
        row.updated_at, row.updated_by = now, actor
        s.add(row)
        s.add(audit_entry(now, actor, "consultation.defaults", "community", community_id, **changes))
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


async def get_session(db: Database, session_id: int) -> ConsultationSession | None:
    async with db.read() as s:
        return await s.get(ConsultationSession, session_id)


async def next_session(db: Database, community_id: int, now: dt.datetime) -> ConsultationSession | None:
    """The community's next session that has not ended (cancelled ones too, so residents learn of it)."""
    async with db.read() as s:
        q = (
            select(ConsultationSession)
            .where(ConsultationSession.community_id == community_id,
                   ConsultationSession.starts_at > now - dt.timedelta(hours=12),
                   ConsultationSession.status != SessionStatus.HELD)
            .order_by(ConsultationSession.starts_at)
            .limit(3)
        )
        for row in (await s.exec(q)).all():
            if row.ends_at > now:
                return row
    return None


async def latest_session(db: Database, community_id: int, now: dt.datetime) -> ConsultationSession | None:
    """The session staff work on: the one running or most recently started, else the next one."""
    async with db.read() as s:
        q = (
            select(ConsultationSession)
            .where(ConsultationSession.community_id == community_id,
                   ConsultationSession.starts_at <= now + dt.timedelta(hours=12),
                   ConsultationSession.status != SessionStatus.CANCELLED)
            .order_by(col(ConsultationSession.starts_at).desc())
            .limit(1)
        )
        row = (await s.exec(q)).first()
    return row or await next_session(db, community_id, now)


async def list_sessions(db: Database, community_id: int | None = None, limit: int = 20) -> list[ConsultationSession]:
    async with db.read() as s:
        q = select(ConsultationSession).order_by(col(ConsultationSession.starts_at).desc()).limit(limit)
        if community_id is not None:
            q = q.where(ConsultationSession.community_id == community_id)
        return list((await s.exec(q)).all())


@dataclass(frozen=True)
class SessionView:
    session: ConsultationSession
    community_name: str
    booked: int
    waitlisted: int
    agenda: list[Topic]

    @property
    def seats_left(self) -> int:
        return max(0, self.session.seats - self.booked)


async def session_view(db: Database, session_id: int) -> SessionView | None:
    async with db.read() as s:
        row = await s.get(ConsultationSession, session_id)
        if row is None:
            return None
        community = await s.get(Community, row.community_id)
        counts = dict((await s.exec(
            select(Booking.status, func.count()).where(Booking.session_id == session_id).group_by(Booking.status)
        )).all())
        agenda = list((await s.exec(
            select(Topic).where(Topic.session_id == session_id, Topic.on_agenda == True)  # noqa: E712
            .order_by(Topic.agenda_order, Topic.id).limit(AGENDA_LIMIT)
        )).all())
    return SessionView(row, community.name if community else "", counts.get(BookingStatus.BOOKED, 0),
                       counts.get(BookingStatus.WAITLISTED, 0), agenda)


# ---------------------------------------------------------------- bookings


@dataclass(frozen=True)
class BookingResult:
    status: str  # booked | waitlisted
    code: str | None
    position: int  # waitlist position (0 when booked)
    already: bool  # the resident had this booking before this call
    session: ConsultationSession


async def _lock_session(s: AsyncSession, session_id: int) -> ConsultationSession:
    row = await s.get(ConsultationSession, session_id, with_for_update=True)
    if row is None:
        raise ConsultationError("没有找到这场议事。")
    return row


async def _booked_count(s: AsyncSession, session_id: int) -> int:
    q = select(func.count()).select_from(Booking).where(
        Booking.session_id == session_id, Booking.status == BookingStatus.BOOKED
    )
    return int((await s.exec(q)).one())


async def _position(s: AsyncSession, booking: Booking) -> int:
    q = select(func.count()).select_from(Booking).where(
        Booking.session_id == booking.session_id,
        Booking.status == BookingStatus.WAITLISTED,
        Booking.queue_no < booking.queue_no,
    )
    return int((await s.exec(q)).one()) + 1


async def _taken_codes(s: AsyncSession, session_id: int) -> set[str]:
    q = select(Booking.code).where(Booking.session_id == session_id, col(Booking.code).is_not(None))
    return set((await s.exec(q)).all())


async def book_seat(db: Database, session_id: int, resident: Resident, now: dt.datetime) -> BookingResult:
    """预约: a seat with a check-in code, or a place on the waitlist. Asking again returns the same booking."""
    if not resident.is_bound or resident.id is None:
        raise ConsultationError("请先绑定住址后再预约。")
    async with db.write() as s:
        session = await _lock_session(s, session_id)
        if session.community_id != resident.community_id:
            raise ConsultationError("只能预约您所在社区的议事。")
        if session.status == SessionStatus.CANCELLED:
            raise ConsultationError("本场议事已取消。")
        if session.status == SessionStatus.HELD or now >= session.starts_at:
            raise ConsultationError("本场议事已经开始，无法再预约。")
        if now < session.registration_opens_at:
            raise ConsultationError(f"报名将于{when_text(session.registration_opens_at)}开放，届时再来预约。")
        existing = (await s.exec(
            select(Booking).where(Booking.session_id == session_id, Booking.resident_id == resident.id)
        )).first()
        if existing is not None and existing.status != BookingStatus.CANCELLED:
            position = await _position(s, existing) if existing.status == BookingStatus.WAITLISTED else 0
            return BookingResult(existing.status, existing.code, position, True, session)
        booking = existing or Booking(session_id=session_id, resident_id=resident.id, status="", queued_at=now)
        booking.queued_at, booking.cancelled_at, booking.checked_in_at = now, None, None
        last = (await s.exec(select(func.max(Booking.queue_no)).where(Booking.session_id == session_id))).one()
        booking.queue_no = int(last or 0) + 1
        if await _booked_count(s, session_id) < session.seats:
            booking.status, booking.booked_at = BookingStatus.BOOKED, now
            booking.code = booking.code or _new_code(await _taken_codes(s, session_id))
        else:
            booking.status, booking.code = BookingStatus.WAITLISTED, None
        s.add(booking)
        await s.flush()
        position = await _position(s, booking) if booking.status == BookingStatus.WAITLISTED else 0
        return BookingResult(booking.status, booking.code, position, False, session)


def promoted_text(session: ConsultationSession, code: str) -> str:
    return (
        f"好消息！{when_text(session.starts_at)}的社区议事有空位了，您已从候补转为正式预约。\n"
        f"签到码：{code}\n地点：{session.venue}\n如不能参加，请回复「议事」取消预约。"
    )


async def _promote(s: AsyncSession, session: ConsultationSession, now: dt.datetime, quiet: QuietHours | None) -> int:
    """Fill free seats from the head of the waitlist, telling each one. Returns how many were promoted."""
    free = session.seats - await _booked_count(s, session.id)
    if free <= 0:
        return 0
    q = (
        select(Booking)
        .where(Booking.session_id == session.id, Booking.status == BookingStatus.WAITLISTED)
        .order_by(Booking.queue_no)
        .limit(free)
    )
    taken = await _taken_codes(s, session.id)
    promoted = 0
    for booking in (await s.exec(q)).all():
        booking.code = _new_code(taken)
        taken.add(booking.code)
        booking.status, booking.booked_at = BookingStatus.BOOKED, now
        s.add(booking)
        await enqueue(s, NoticeKind.CONSULTATION, promoted_text(session, booking.code),
                      [(booking.resident_id, f"cs:{session.id}:promoted:{booking.id}:{booking.code}")], now,
                      quiet=quiet)
        promoted += 1
    return promoted


async def cancel_booking(
    db: Database, session_id: int, resident_id: int, now: dt.datetime, quiet: QuietHours | None = None
) -> Booking:
    """取消预约 (up to the start). A freed seat goes to the first on the waitlist, who is told."""
    async with db.write() as s:
        session = await _lock_session(s, session_id)
        booking = (await s.exec(
            select(Booking).where(Booking.session_id == session_id, Booking.resident_id == resident_id)
        )).first()
        if booking is None or booking.status == BookingStatus.CANCELLED:
            raise ConsultationError("您没有这场议事的预约。")
        if now >= session.starts_at:
            raise ConsultationError("议事已经开始，无法取消预约。")
        was_booked = booking.status == BookingStatus.BOOKED
        booking.status, booking.cancelled_at = BookingStatus.CANCELLED, now
        s.add(booking)
        await s.flush()
        if was_booked and session.status == SessionStatus.SCHEDULED:
            await _promote(s, session, now, quiet)
        return booking


async def my_booking(db: Database, session_id: int, resident_id: int) -> tuple[Booking | None, int]:
    async with db.read() as s:
        booking = (await s.exec(
            select(Booking).where(Booking.session_id == session_id, Booking.resident_id == resident_id)
        )).first()
        if booking is None or booking.status == BookingStatus.CANCELLED:
            return None, 0
        position = await _position(s, booking) if booking.status == BookingStatus.WAITLISTED else 0
        return booking, position


async def check_in(db: Database, scope: Scope | None, community_ids: list[int], code: str, now: dt.datetime,
                   actor: str) -> tuple[Booking, Resident]:
    """议事签到: find the booking by code in the staff member's current sessions and mark it checked in."""
    code = normalise_code(code)
    if not 6 <= len(code) <= 8:
        raise ConsultationError("签到码是6位字母数字，请核对后重试。")
    async with db.write() as s:
        q = (
            select(Booking, ConsultationSession)
            .join(ConsultationSession, ConsultationSession.id == Booking.session_id)
            .where(Booking.code == code, col(ConsultationSession.community_id).in_(community_ids),
                   ConsultationSession.status == SessionStatus.SCHEDULED,
                   ConsultationSession.starts_at < now + dt.timedelta(hours=12),
                   ConsultationSession.starts_at > now - dt.timedelta(hours=12))
            .with_for_update()
        )
        found = (await s.exec(q)).first()
        if found is None:
            raise ConsultationError("没有找到这个签到码，请核对后重试（签到仅限议事当天）。")
        booking, session = found
        _check_staff(scope, session.community_id)
        if booking.status != BookingStatus.BOOKED:
            raise ConsultationError("这个预约已取消，不能签到。")
        if booking.checked_in_at is not None:
            raise ConsultationError(f"这位居民已于{local(booking.checked_in_at):%H:%M}签到过了。")
        booking.checked_in_at = now
        s.add(booking)
        s.add(audit_entry(now, actor, "consultation.check_in", "consultation_booking", booking.id,
                          session=session.id))
        resident = await s.get(Resident, booking.resident_id)
        assert resident is not None
        return booking, resident


# ---------------------------------------------------------------- staff changes to a session


EDITABLE = {"venue", "capacity", "reserved_seats", "duration_minutes"}


async def edit_session(db: Database, session_id: int, scope: Scope | None, now: dt.datetime, actor: str,
                       quiet: QuietHours | None = None, **changes) -> ConsultationSession:
    """议事设置: venue, capacity, reserved seats, duration. More seats promote from the waitlist."""
    unknown = set(changes) - EDITABLE
    if unknown:
        raise ConsultationError(f"无法修改：{', '.join(sorted(unknown))}")
    async with db.write() as s:
        session = await _lock_session(s, session_id)
        _check_staff(scope, session.community_id)
        if session.status != SessionStatus.SCHEDULED:
            raise ConsultationError("这场议事已取消或已结束，不能再修改。")
        for name, value in changes.items():
            setattr(session, name, value)
        if not session.venue.strip():
            raise ConsultationError("地点不能为空。")
        if not 1 <= session.capacity <= 1000 or not 0 <= session.reserved_seats <= session.capacity:
            raise ConsultationError("名额不合理：总名额1到1000，预留名额不超过总名额。")
        booked = await _booked_count(s, session_id)
        if booked > session.seats:
            raise ConsultationError(f"已有{booked}人预约，可预约名额不能少于{booked}。")
        session.updated_at = now
        s.add(session)
        s.add(audit_entry(now, actor, "consultation.edit", "consultation_session", session_id, **changes))
        await s.flush()
        await _promote(s, session, now, quiet)
        return session


async def move_session(db: Database, session_id: int, starts_at: dt.datetime, scope: Scope | None,
                       now: dt.datetime, actor: str) -> ConsultationSession:
    """改期: a new start; everyone booked or waitlisted is told. Reminders follow the new date."""
    if starts_at <= now:
        raise ConsultationError("新的时间必须在现在之后。")
    async with db.write() as s:
        session = await _lock_session(s, session_id)
        _check_staff(scope, session.community_id)
        if session.status != SessionStatus.SCHEDULED:
            raise ConsultationError("这场议事已取消或已结束，不能改期。")
        old = session.starts_at
        session.starts_at, session.updated_at = starts_at, now
        session.remind_2d_at = session.remind_day_at = None
        if session.topic_cutoff_at > starts_at:
            session.topic_cutoff_at = starts_at
        s.add(session)
        s.add(audit_entry(now, actor, "consultation.move", "consultation_session", session_id,
                          old=local(old).isoformat(), new=local(starts_at).isoformat()))
        text = (f"【议事改期】原定{when_text(old)}的社区议事改到{when_text(starts_at)}，地点：{session.venue}。\n"
                "您的预约和签到码不变。如不能参加，请回复「议事」取消预约。")
        await create_system_broadcast(
            s, f"cs:{session_id}:move:{int(starts_at.timestamp())}", NoticeKind.CONSULTATION,
            AudienceKind.SESSION_ALL, [session_id], "议事预约居民（改期通知）", text, now, urgent=True,
        )
        return session


async def cancel_session(db: Database, session_id: int, reason: str, scope: Scope | None, now: dt.datetime,
                         actor: str) -> ConsultationSession:
    """取消议事: with a reason; everyone booked or waitlisted is told."""
    reason = reason.strip()
    if not reason:
        raise ConsultationError("请说明取消的原因。")
    async with db.write() as s:
        session = await _lock_session(s, session_id)
        _check_staff(scope, session.community_id)
        if session.status != SessionStatus.SCHEDULED:
            raise ConsultationError("这场议事已取消或已结束。")
        session.status, session.cancel_reason, session.updated_at = SessionStatus.CANCELLED, reason[:200], now
        s.add(session)
        s.add(audit_entry(now, actor, "consultation.cancel", "consultation_session", session_id, reason=reason))
        text = (f"【议事取消】{when_text(session.starts_at)}的社区议事取消了。\n原因：{reason[:200]}\n"
                "给您带来不便，敬请谅解。")
        await create_system_broadcast(
            s, f"cs:{session_id}:cancel", NoticeKind.CONSULTATION, AudienceKind.SESSION_ALL, [session_id],
            "议事预约居民（取消通知）", text, now, urgent=True,
        )
        return session


# ---------------------------------------------------------------- topics, agenda, outcomes


async def propose_topic(db: Database, session_id: int, resident: Resident, title: str, now: dt.datetime,
                        need_id: int | None = None) -> Topic:
    """提议题: before the cut-off; at most 3 per resident per session."""
    title = title.strip()
    if len(title) < 4:
        raise ConsultationError("议题请多写几个字，说清楚想讨论什么。")
    if len(title) > MAX_TOPIC:
        raise ConsultationError(f"议题请控制在{MAX_TOPIC}字以内。")
    async with db.write() as s:
        session = await _lock_session(s, session_id)
        if session.community_id != resident.community_id:
            raise ConsultationError("只能向您所在社区的议事提议题。")
        if session.status != SessionStatus.SCHEDULED:
            raise ConsultationError("这场议事已取消或已结束。")
        if now >= session.topic_cutoff_at:
            raise ConsultationError(f"本场议题征集已于{when_text(session.topic_cutoff_at)}截止，欢迎下月再提。")
        count = int((await s.exec(select(func.count()).select_from(Topic).where(
            Topic.session_id == session_id, Topic.proposer_id == resident.id))).one())
        if count >= 3:
            raise ConsultationError("每场议事每人最多提3个议题。")
        topic = Topic(session_id=session_id, proposer_id=resident.id, title=title, need_id=need_id, created_at=now)
        s.add(topic)
        await s.flush()
        return topic


async def session_topics(db: Database, session_id: int, limit: int = 30) -> list[Topic]:
    async with db.read() as s:
        q = (select(Topic).where(Topic.session_id == session_id)
             .order_by(col(Topic.on_agenda).desc(), Topic.agenda_order, Topic.id).limit(limit))
        return list((await s.exec(q)).all())


@dataclass(frozen=True)
class Candidate:
    """A possible agenda item: a resident's topic, or a need with the evidence for it."""

    title: str
    evidence: int
    topic_id: int | None = None
    need_id: int | None = None
    note: str = ""


async def need_candidates(db: Database, community_id: int, now: dt.datetime, limit: int = 8) -> list[Candidate]:
    """Open C-tier needs (定期办理: they wait for the 17th) and the month's most-seconded open needs, with the
    evidence: how many residents raised each (the reporter plus everyone who seconded)."""
    here = local(now)
    month_start = dt.datetime(here.year, here.month, 1, tzinfo=TZ)
    open_statuses = [status.value for status in OPEN_STATUSES]
    async with db.read() as s:
        c_tier = (await s.exec(
            select(Need).where(Need.community_id == community_id, Need.tier == "C",
                               col(Need.status).in_(open_statuses))
            .order_by(col(Need.supporters).desc(), Need.id).limit(limit)
        )).all()
        seconded = (await s.exec(
            select(Need).where(Need.community_id == community_id, Need.supporters > 1,
                               col(Need.status).in_(open_statuses), Need.created_at >= month_start)
            .order_by(col(Need.supporters).desc(), Need.id).limit(limit)
        )).all()
    out, seen = [], set()
    for need, note in [(n, "C类待议") for n in c_tier] + [(n, "本月附议多") for n in seconded]:
        if need.id in seen:
            continue
        seen.add(need.id)
        out.append(Candidate(title=summary_line(need, 30), evidence=need.supporters, need_id=need.id,
                             note=f"{note} {need.ticket}"))
    return out


async def open_needs_of(db: Database, resident_id: int, limit: int = 5) -> list[tuple[int, str]]:
    """The proposer's open needs, (id, one line), to link a topic to."""
    async with db.read() as s:
        rows = (await s.exec(
            select(Need).where(Need.reporter_id == resident_id,
                               col(Need.status).in_([status.value for status in OPEN_STATUSES]))
            .order_by(col(Need.id).desc()).limit(limit)
        )).all()
    return [(n.id, f"{n.ticket} {summary_line(n, 16)}") for n in rows]


async def draft_agenda(db: Database, session_id: int, now: dt.datetime) -> list[Candidate]:
    """议程草稿: residents' topics not yet on the agenda, then needs by evidence (how many raised each)."""
    session = await get_session(db, session_id)
    if session is None:
        raise ConsultationError("没有找到这场议事。")
    topics = [t for t in await session_topics(db, session_id) if not t.on_agenda]
    out = [Candidate(t.title, max(1, t.evidence), topic_id=t.id, need_id=t.need_id, note="居民提议") for t in topics]
    linked = {t.need_id for t in topics if t.need_id}
    on_agenda = {t.need_id for t in await session_topics(db, session_id) if t.on_agenda and t.need_id}
    for c in await need_candidates(db, session.community_id, now):
        if c.need_id not in linked and c.need_id not in on_agenda:
            out.append(c)
    out.sort(key=lambda c: -c.evidence)
    return out[:LIST_LIMIT]


async def add_to_agenda(db: Database, session_id: int, picks: list[Candidate], scope: Scope | None,
                        now: dt.datetime, actor: str) -> list[Topic]:
    async with db.write() as s:
        session = await _lock_session(s, session_id)
        _check_staff(scope, session.community_id)
        if session.status != SessionStatus.SCHEDULED:
            raise ConsultationError("这场议事已取消或已结束。")
        order = int((await s.exec(select(func.count()).select_from(Topic).where(
            Topic.session_id == session_id, Topic.on_agenda == True))).one())  # noqa: E712
        added = []
        for c in picks:
            topic = await s.get(Topic, c.topic_id) if c.topic_id else None
            if topic is None:
                topic = Topic(session_id=session_id, title=c.title[:200], need_id=c.need_id, source="need",
                              evidence=c.evidence, created_at=now)
            if topic.on_agenda:
                continue
            order += 1
            topic.on_agenda, topic.agenda_order = True, order
            topic.evidence = max(topic.evidence, c.evidence)
            s.add(topic)
            added.append(topic)
        await s.flush()
        s.add(audit_entry(now, actor, "consultation.agenda", "consultation_session", session_id,
                          topics=[t.id for t in added]))
        return added


def outcome_text(session: ConsultationSession, topic: Topic) -> str:
    label = OUTCOME_LABELS.get(topic.outcome or "", "")
    note = f"\n说明：{topic.outcome_note}" if topic.outcome_note else ""
    return f"您在{local(session.starts_at).month}月议事提出的议题「{topic.title[:30]}」\n结果：{label}{note}"


async def record_outcome(db: Database, topic_id: int, outcome: str, note: str, scope: Scope | None,
                         now: dt.datetime, actor: str) -> Topic:
    """Each topic's decision. A declined topic needs a reason. The proposer is told when minutes go out."""
    if outcome not in OUTCOME_LABELS:
        raise ConsultationError("请选择议题结果。")
    note = note.strip()
    if outcome == Outcome.DECLINED and not note:
        raise ConsultationError("不予采纳时请说明理由。")
    async with db.write() as s:
        topic = await s.get(Topic, topic_id, with_for_update=True)
        if topic is None:
            raise ConsultationError("没有找到这个议题。")
        session = await s.get(ConsultationSession, topic.session_id)
        assert session is not None
        _check_staff(scope, session.community_id)
        topic.outcome, topic.outcome_note, topic.decided_at = outcome, note[:300] or None, now
        s.add(topic)
        s.add(audit_entry(now, actor, "consultation.outcome", "consultation_topic", topic_id, outcome=outcome,
                          note=note))
        if session.status == SessionStatus.HELD and topic.proposer_id:
            await enqueue(s, NoticeKind.CONSULTATION, outcome_text(session, topic),
                          [(topic.proposer_id, f"ct:{topic.id}:outcome:{outcome}")], now)
        return topic


async def publish_minutes(db: Database, session_id: int, minutes: str, scope: Scope | None, now: dt.datetime,
                          actor: str) -> int:
    """议事纪要: saved, the session is held; the minutes go to those booked, each decided topic's outcome to
    its proposer. Returns how many proposers were told."""
    minutes = minutes.strip()
    if len(minutes) < 10:
        raise ConsultationError("纪要请写得完整一些（至少10个字）。")
    if len(minutes) > MAX_MINUTES:
        raise ConsultationError(f"纪要请控制在{MAX_MINUTES}字以内，可分条概括。")
    async with db.write() as s:
        session = await _lock_session(s, session_id)
        _check_staff(scope, session.community_id)
        if session.status == SessionStatus.CANCELLED:
            raise ConsultationError("这场议事已取消。")
        if now < session.starts_at:
            raise ConsultationError("议事还没开始，会后再记录纪要。")
        session.status, session.minutes, session.minutes_at, session.updated_at = SessionStatus.HELD, minutes, now, now
        s.add(session)
        topics = list((await s.exec(select(Topic).where(Topic.session_id == session_id).limit(200))).all())
        decided = [t for t in topics if t.outcome]
        lines = [f"【{local(session.starts_at).month}月社区议事纪要】", minutes[:600]]
        for t in decided[:AGENDA_LIMIT]:
            lines.append(f"· {t.title[:20]}：{OUTCOME_LABELS[t.outcome or '']}")
        await create_system_broadcast(s, f"cs:{session_id}:minutes", NoticeKind.CONSULTATION, AudienceKind.SESSION,
                                      [session_id], "议事预约居民（会议纪要）", "\n".join(lines), now)
        told = 0
        for t in decided:
            if t.proposer_id:
                told += await enqueue(s, NoticeKind.CONSULTATION, outcome_text(session, t),
                                      [(t.proposer_id, f"ct:{t.id}:outcome:{t.outcome}")], now)
        s.add(audit_entry(now, actor, "consultation.minutes", "consultation_session", session_id,
                          decided=len(decided), topics=len(topics)))
        return told


async def my_topics(db: Database, resident_id: int, limit: int = 5) -> list[tuple[Topic, ConsultationSession]]:
    async with db.read() as s:
        q = (
            select(Topic, ConsultationSession)
            .join(ConsultationSession, ConsultationSession.id == Topic.session_id)
            .where(Topic.proposer_id == resident_id)
            .order_by(col(Topic.id).desc())
            .limit(limit)
        )
        return list((await s.exec(q)).all())


# ---------------------------------------------------------------- reminders and audiences


def _reminder_text(kind: str, session: ConsultationSession, community: str) -> str:
    when = when_text(session.starts_at)
    if kind == "open":
        return (f"【阳光17议】{community}{local(session.starts_at).month}月议事开始报名啦！\n"
                f"时间：{when}\n地点：{session.venue}\n名额{session.seats}个，回复「议事」预约座位、提议题。")
    if kind == "2d":
        return f"【议事提醒】您预约的社区议事将于{when}在{session.venue}举行。请凭签到码入场，回复「议事」可查看。"
    return f"【议事提醒】今天{local(session.starts_at):%H:%M}在{session.venue}召开社区议事，请带好签到码，准时参加。"


async def due_reminders(db: Database, now: dt.datetime, limit: int = 500) -> int:
    """Create the reminder broadcasts that are due (each once); the broadcast job delivers them."""
    made = 0
    async with db.read() as s:
        q = (
            select(ConsultationSession.id)
            .where(ConsultationSession.status == SessionStatus.SCHEDULED,
                   ConsultationSession.starts_at > now,
                   ConsultationSession.registration_opens_at <= now,
                   col(ConsultationSession.opened_notice_at).is_(None)
                   | col(ConsultationSession.remind_2d_at).is_(None)
                   | col(ConsultationSession.remind_day_at).is_(None))
            .order_by(ConsultationSession.starts_at)
            .limit(limit)
        )
        ids = list((await s.exec(q)).all())
    for session_id in ids:
        async with db.write() as s:
            session = await _lock_session(s, session_id)
            if session.status != SessionStatus.SCHEDULED or session.starts_at <= now:
                continue
            community = await s.get(Community, session.community_id)
            name = community.name if community else ""
            day = local(session.starts_at).date()
            stamp = day.isoformat()
            due_2d = dt.datetime.combine(day - dt.timedelta(days=2), dt.time(9, 0), tzinfo=TZ)
            due_day = dt.datetime.combine(day, dt.time(8, 0), tzinfo=TZ)
            if session.opened_notice_at is None:
                session.opened_notice_at = now
                if now < due_2d:  # registration opening long past: no stale "报名开始" notice
                    await create_system_broadcast(
                        s, f"cs:{session_id}:open", NoticeKind.CONSULTATION, AudienceKind.OPTED_IN,
                        [session.community_id],
                        f"{name}议事提醒订阅居民", _reminder_text("open", session, name), now)
                    made += 1
            if session.remind_2d_at is None and due_2d <= now < due_day:
                session.remind_2d_at = now
                await create_system_broadcast(
                    s, f"cs:{session_id}:2d:{stamp}", NoticeKind.CONSULTATION, AudienceKind.SESSION, [session_id],
                    "议事预约居民（会前提醒）", _reminder_text("2d", session, name), now)
                made += 1
            if session.remind_day_at is None and now >= due_day:
                session.remind_day_at = now
                session.remind_2d_at = session.remind_2d_at or now
                await create_system_broadcast(
                    s, f"cs:{session_id}:day:{stamp}", NoticeKind.CONSULTATION, AudienceKind.SESSION, [session_id],
                    "议事预约居民（当天提醒）", _reminder_text("day", session, name), now)
                made += 1
            s.add(session)
    return made
