"""Residents' topics: proposing one before the cut-off (optionally naming one of their open needs), and the lists
of a session's topics and a resident's own."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func
from sqlmodel import col, select

from storage.consultation.common import MAX_TOPIC, ConsultationError, _lock_session, deadline_text
from storage.consultation_tables import ConsultationSession, SessionStatus, Topic
from storage.db import Database
from storage.needs import OPEN_STATUSES, Need, summary_line
from storage.residents import Resident

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
            raise ConsultationError(f"本场议题征集已于{deadline_text(session.topic_cutoff_at)}截止，欢迎下月再提。")
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


async def open_needs_of(db: Database, resident_id: int, limit: int = 5) -> list[tuple[int, str]]:
    """The proposer's open needs, (id, one line), to link a topic to."""
    async with db.read() as s:
        rows = (await s.exec(
            select(Need).where(Need.reporter_id == resident_id,
                               col(Need.status).in_([status.value for status in OPEN_STATUSES]))
            .order_by(col(Need.id).desc()).limit(limit)
        )).all()
    return [(n.id, f"{n.ticket} {summary_line(n, 16)}") for n in rows]


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
