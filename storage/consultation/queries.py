"""Reading the consultation's sessions: one, the next, the latest, a list, and the view residents and staff see."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import col, select

from storage.actor import Actor
from storage.consultation.common import AGENDA_LIMIT
from storage.consultation_tables import Booking, BookingStatus, ConsultationSession, SessionStatus, Topic
from storage.db import Database
from storage.org import Community
from storage.residents import Resident


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


async def sessions_for(db: Database, actor: Actor, limit: int = 40) -> list[tuple[ConsultationSession, str]]:
    """The sessions of the communities the actor staffs (every community for an admin), latest first, each with
    its community's name: the console's list, scoped as storage.policy's Can.RUN_COMMUNITY is."""
    communities = actor.communities
    if communities is not None and not communities:
        return []
    async with db.read() as s:
        q = (select(ConsultationSession, Community.name)
             .join(Community, Community.id == ConsultationSession.community_id)
             .order_by(col(ConsultationSession.starts_at).desc(), col(ConsultationSession.id).desc()).limit(limit))
        if communities is not None:
            q = q.where(col(ConsultationSession.community_id).in_(sorted(communities)))
        return [(row, name) for row, name in (await s.exec(q)).all()]


async def session_roster(db: Database, session_id: int, limit: int = 1200) -> list[tuple[Booking, Resident]]:
    """Those booked (in arrival order: their seat numbers) then the waitlist (in its order), with each resident.
    Bounded: a session has at most 1000 seats."""
    async with db.read() as s:
        q = (select(Booking, Resident).join(Resident, Resident.id == Booking.resident_id)
             .where(Booking.session_id == session_id,
                    col(Booking.status).in_([BookingStatus.BOOKED, BookingStatus.WAITLISTED]))
             .order_by(Booking.status, Booking.queue_no).limit(limit))
        return [(booking, resident) for booking, resident in (await s.exec(q)).all()]
