"""Who a broadcast reaches, where the consultation's audiences are concerned: the kinds of audience, and the
residents and sessions behind the consultation's (阳光17议) ones.

Read-only and below both storage.broadcast (which counts and sends to these audiences) and
storage.consultation (which sends its notices as broadcasts), so neither imports the other back.
"""

from __future__ import annotations

import datetime as dt

from sqlmodel import col, select

from storage.clock import local
from storage.consultation_tables import Booking, BookingStatus, ConsultationSession, SessionStatus
from storage.db import Database
from storage.org import Community
from storage.residents import Resident


class AudienceKind:
    COMMUNITY = "community"  # every bound resident of one community
    BUILDINGS = "buildings"  # bound residents of some buildings
    GRIDS = "grids"  # bound residents of the buildings of some grids
    STREET = "street"  # every bound resident of a street (district staff)
    SESSION = "session"  # residents with a seat at a consultation session
    SESSION_ALL = "session_all"  # booked and waitlisted (a session moved or cancelled)
    OPTED_IN = "opted_in"  # bound residents of a community who asked for consultation reminders


UPCOMING_SESSIONS = 5  # how many upcoming sessions the broadcast audience menu offers


async def upcoming_sessions_for(
    db: Database, community_ids: list[int], now: dt.datetime | None = None, limit: int = UPCOMING_SESSIONS,
) -> list[tuple[int, str]]:
    """(session id, label) of the scheduled sessions still ahead (from `now`), nearest first, at most `limit`:
    the broadcast audience menu. The label names the day, so sessions of one month are told apart."""
    async with db.read() as s:
        q = (
            select(ConsultationSession, Community.name)
            .join(Community, Community.id == ConsultationSession.community_id)
            .where(col(ConsultationSession.community_id).in_(community_ids),
                   ConsultationSession.status == SessionStatus.SCHEDULED)
        )
        if now is not None:
            q = q.where(col(ConsultationSession.starts_at) >= now)
        q = q.order_by(col(ConsultationSession.starts_at), col(ConsultationSession.id)).limit(limit)
        rows = (await s.exec(q)).all()
    return [(row.id, f"{name}{_day(row.starts_at)}议事已预约居民") for row, name in rows]


def _day(moment: dt.datetime) -> str:
    t = local(moment)
    return f"{t.month}月{t.day}日"


def audience_residents(kind: str, ids: list[int]):
    """Resident ids for the consultation's broadcast audiences (storage.broadcast counts and sends to them)."""
    base = select(Resident.id).where(Resident.subscribed == True)  # noqa: E712
    if kind == AudienceKind.OPTED_IN:
        return base.where(col(Resident.community_id).in_(ids), col(Resident.bound_at).is_not(None),
                          Resident.notify_consultation == True)  # noqa: E712
    statuses = [BookingStatus.BOOKED] if kind == AudienceKind.SESSION else [BookingStatus.BOOKED,
                                                                              BookingStatus.WAITLISTED]
    booked = select(Booking.resident_id).where(col(Booking.session_id).in_(ids), col(Booking.status).in_(statuses))
    return base.where(col(Resident.id).in_(booked))
