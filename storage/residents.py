"""Residents: everyone who talks to the account, bound or not, keyed by openid."""

from __future__ import annotations

import datetime as dt

from sqlmodel import Field, SQLModel, select

from storage.db import Database


class Resident(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    openid: str = Field(max_length=64, unique=True)
    name: str | None = Field(default=None, max_length=32)
    phone: str | None = Field(default=None, max_length=20, index=True)
    community_id: int | None = Field(default=None, foreign_key="community.id", index=True)
    building_id: int | None = Field(default=None, foreign_key="building.id", index=True)
    room: str | None = Field(default=None, max_length=16)
    subscribed: bool = Field(default=True)
    bound_at: dt.datetime | None = None
    # Start of WeChat's 48-hour customer-service window: the resident's latest message.
    last_contact_at: dt.datetime | None = Field(default=None, index=True)
    created_at: dt.datetime

    @property
    def is_bound(self) -> bool:
        return self.bound_at is not None


def mask_phone(phone: str | None) -> str:
    """138****5678: the only way a phone number is shown in a reply or a log line."""
    if not phone:
        return "未填写"
    if len(phone) < 7:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


# A contact refresh writes at most this often per resident: a chatty resident must not cost a DB
# write per message, and a minute's slack is nothing against a 48-hour window.
CONTACT_REFRESH = dt.timedelta(seconds=60)


async def find_resident(db: Database, openid: str) -> Resident | None:
    async with db.read() as session:
        return (await session.exec(select(Resident).where(Resident.openid == openid))).first()


async def touch_resident(db: Database, openid: str, now: dt.datetime, resident: Resident | None = None) -> Resident:
    """Record that the resident just wrote to us (opens the 48-hour window); create them on first contact."""
    if resident is None:
        resident = await find_resident(db, openid)
    if resident is not None and resident.last_contact_at and now - resident.last_contact_at < CONTACT_REFRESH:
        return resident
    async with db.write() as session:
        row = (await session.exec(select(Resident).where(Resident.openid == openid))).first()
        if row is None:
            row = Resident(openid=openid, created_at=now, last_contact_at=now)
        else:
            row.last_contact_at = now
        session.add(row)
    return row


async def set_subscribed(db: Database, openid: str, subscribed: bool, now: dt.datetime) -> Resident:
    async with db.write() as session:
        row = (await session.exec(select(Resident).where(Resident.openid == openid))).first()
        if row is None:
            row = Resident(openid=openid, created_at=now, last_contact_at=now)
        row.subscribed = subscribed
        session.add(row)
    return row
