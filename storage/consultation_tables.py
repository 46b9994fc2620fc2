"""The consultation's (阳光17议) tables, apart from its operations (storage.consultation), so the broadcast
audiences (storage.audiences) can read sessions and bookings without importing the operations that send
broadcasts."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel


class SessionStatus:
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"
    HELD = "held"  # minutes published


class BookingStatus:
    BOOKED = "booked"
    WAITLISTED = "waitlisted"
    CANCELLED = "cancelled"


class ConsultationDefaults(SQLModel, table=True):
    """A community's standing arrangements for its 17th consultations (editable by staff and CLI)."""

    __tablename__ = "consultation_defaults"

    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id", unique=True)
    start_time: str = Field(default="14:30", max_length=5)  # HH:MM, district time
    duration_minutes: int = 120
    venue: str = Field(default="社区党群服务中心会议室", max_length=128)
    capacity: int = 40
    reserved_seats: int = 10  # for the Party organisation, the residents' committee, units
    registration_opens_day: int = 10  # day of the meeting month on which booking opens (09:00)
    topic_cutoff_day: int = 14  # topics accepted until the end of this day
    updated_at: dt.datetime
    updated_by: str = Field(default="", max_length=64)


class ConsultationSession(SQLModel, table=True):
    __tablename__ = "consultation_session"
    __table_args__ = (UniqueConstraint("community_id", "month", name="uq_consultation_session_month"),)

    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    month: str = Field(max_length=7)  # "2026-12"
    starts_at: dt.datetime = Field(index=True)
    duration_minutes: int = 120
    venue: str = Field(max_length=128)
    capacity: int
    reserved_seats: int
    registration_opens_at: dt.datetime
    topic_cutoff_at: dt.datetime
    status: str = Field(default=SessionStatus.SCHEDULED, max_length=16)
    cancel_reason: str | None = Field(default=None, max_length=200)
    minutes: str | None = None
    minutes_at: dt.datetime | None = None
    opened_notice_at: dt.datetime | None = None
    remind_2d_at: dt.datetime | None = None
    remind_day_at: dt.datetime | None = None
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def seats(self) -> int:
        return max(0, self.capacity - self.reserved_seats)

    @property
    def ends_at(self) -> dt.datetime:
        return self.starts_at + dt.timedelta(minutes=self.duration_minutes)


class Booking(SQLModel, table=True):
    __tablename__ = "consultation_booking"
    __table_args__ = (
        UniqueConstraint("session_id", "resident_id", name="uq_booking_resident"),
        UniqueConstraint("session_id", "code", name="uq_booking_code"),
        Index("ix_booking_queue", "session_id", "status", "queue_no"),
    )

    id: int | None = Field(default=None, primary_key=True)
    session_id: int = Field(foreign_key="consultation_session.id")
    resident_id: int = Field(foreign_key="resident.id", index=True)
    status: str = Field(max_length=16)
    code: str | None = Field(default=None, max_length=8)
    queue_no: int = 0  # arrival order within the session: the waitlist order
    queued_at: dt.datetime
    booked_at: dt.datetime | None = None
    checked_in_at: dt.datetime | None = None
    cancelled_at: dt.datetime | None = None


class Topic(SQLModel, table=True):
    __tablename__ = "consultation_topic"

    id: int | None = Field(default=None, primary_key=True)
    session_id: int = Field(foreign_key="consultation_session.id", index=True)
    proposer_id: int | None = Field(default=None, foreign_key="resident.id", index=True)
    title: str = Field(max_length=200)
    need_id: int | None = None  # the proposer's need (or the need a drafted item came from)
    source: str = Field(default="resident", max_length=16)  # resident | need
    evidence: int = 0  # residents who raised it (drafted items)
    on_agenda: bool = False
    agenda_order: int = 0
    outcome: str | None = Field(default=None, max_length=16)
    outcome_note: str | None = Field(default=None, max_length=300)
    decided_at: dt.datetime | None = None
    created_at: dt.datetime
