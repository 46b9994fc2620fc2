"""The outbox: every notification is a row written in the same transaction as the change that caused it.

A sender (bot/push) drains it; the idempotency key makes writing the same notification twice a no-op.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index
from sqlmodel import Field, SQLModel


class OutboxStatus:
    PENDING = "pending"  # waiting to be tried (again) at next_attempt_at
    SENDING = "sending"  # claimed by a sender; see bot/push for the crash protocol
    SENT = "sent"
    WAITING = "waiting"  # no channel open: shown at the resident's next message
    SHOWN = "shown"  # delivered in a passive reply ("您有 N 条新消息")
    FAILED = "failed"  # gave up after the retry limit; staff can see it
    CANCELLED = "cancelled"


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=128, unique=True)
    resident_id: int = Field(foreign_key="resident.id", index=True)
    kind: str = Field(max_length=32)
    text: str
    payload: str = Field(default="{}")  # JSON: template fields, links
    status: str = Field(default=OutboxStatus.PENDING, max_length=16)
    attempts: int = 0
    next_attempt_at: dt.datetime
    last_error: str | None = Field(default=None, max_length=255)
    channel: str | None = Field(default=None, max_length=16)  # text | template | reply
    created_at: dt.datetime
    sent_at: dt.datetime | None = None
