"""Seats at a session: booking with a check-in code or a place on the ordered waitlist, cancelling (which
promotes from the head of the waitlist, telling each one), the resident's own booking, and check-in."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.actor import Actor
from storage.clock import QuietHours, local
from storage.consultation.common import (
    ConsultationError,
    _check_staff,
    _lock_session,
    _new_code,
    normalise_code,
    when_text,
)
from storage.consultation_tables import Booking, BookingStatus, ConsultationSession, SessionStatus
from storage.db import Database
from storage.outbox import NoticeKind, enqueue
from storage.residents import Resident
from storage.roles import audit_entry


@dataclass(frozen=True)
class BookingResult:
    status: str  # booked | waitlisted
    code: str | None
    position: int  # waitlist position (0 when booked)
    already: bool  # the resident had this booking before this call
    session: ConsultationSession




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


CHECK_IN_WINDOW = dt.timedelta(hours=12)  # 议事签到 works this long either side of the start: on the day


def check_in_open(session: ConsultationSession, now: dt.datetime) -> bool:
    """Whether `check_in` would find the session's bookings now."""
    return (session.status == SessionStatus.SCHEDULED
            and session.starts_at - CHECK_IN_WINDOW < now < session.starts_at + CHECK_IN_WINDOW)


async def check_in(db: Database, actor: Actor, code: str, now: dt.datetime) -> tuple[Booking, Resident]:
    """议事签到: find the booking by code in the current sessions of the communities the actor runs and mark it
    checked in."""
    code = normalise_code(code)
    if not 6 <= len(code) <= 8:
        raise ConsultationError("签到码是6位字母数字，请核对后重试。")
    async with db.write() as s:
        q = (
            select(Booking, ConsultationSession)
            .join(ConsultationSession, ConsultationSession.id == Booking.session_id)
            .where(Booking.code == code,
                   ConsultationSession.status == SessionStatus.SCHEDULED,
                   ConsultationSession.starts_at < now + CHECK_IN_WINDOW,
                   ConsultationSession.starts_at > now - CHECK_IN_WINDOW)
            .with_for_update()
        )
        if actor.communities is not None:
            q = q.where(col(ConsultationSession.community_id).in_(sorted(actor.communities)))
        found = (await s.exec(q)).first()
        if found is None:
            raise ConsultationError("没有找到这个签到码，请核对后重试（签到仅限议事当天）。")
        booking, session = found
        _check_staff(actor, session.community_id)
        if booking.status != BookingStatus.BOOKED:
            raise ConsultationError("这个预约已取消，不能签到。")
        if booking.checked_in_at is not None:
            raise ConsultationError(f"这位居民已于{local(booking.checked_in_at):%H:%M}签到过了。")
        booking.checked_in_at = now
        s.add(booking)
        s.add(audit_entry(now, actor.name, "consultation.check_in", "consultation_booking", booking.id,
                          session=session.id))
        resident = await s.get(Resident, booking.resident_id)
        assert resident is not None
        return booking, resident
