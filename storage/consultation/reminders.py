"""The consultation's reminders: registration open (to those who asked for reminders), two days before and on
the day (to those booked), each created once as a system broadcast that the broadcast job delivers."""

from __future__ import annotations

import datetime as dt

from sqlmodel import col, select

from storage.broadcast import AudienceKind, create_system_broadcast
from storage.clock import local
from storage.consultation.common import TZ, _lock_session, when_text
from storage.consultation_tables import ConsultationSession, SessionStatus
from storage.db import Database
from storage.org import Community
from storage.outbox import NoticeKind


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
