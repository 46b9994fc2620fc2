"""After the topics: the agenda draft (residents' topics, then needs by evidence), the agenda, each topic's
outcome, and the minutes that close a session (sent to those booked, each outcome to its proposer)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import col, select

from storage.actor import Actor
from storage.broadcast import AudienceKind, create_system_broadcast
from storage.clock import local
from storage.consultation.common import (
    AGENDA_LIMIT,
    LIST_LIMIT,
    MAX_MINUTES,
    OUTCOME_LABELS,
    TZ,
    ConsultationError,
    Outcome,
    _check_staff,
    _lock_session,
    when_text,
)
from storage.consultation.queries import get_session
from storage.consultation.topics import session_topics
from storage.consultation_tables import ConsultationSession, SessionStatus, Topic
from storage.db import Database
from storage.needs import OPEN_STATUSES, Need
from storage.outbox import NoticeKind, enqueue
from storage.roles import audit_entry
from storage.text import clip_phrase, mask_phones


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
        title = clip_phrase(mask_phones(need.text.replace("\n", " ")), 30)
        out.append(Candidate(title=title, evidence=need.supporters, need_id=need.id, note=f"{note} {need.ticket}"))
    return out



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


async def add_to_agenda(db: Database, session_id: int, picks: list[Candidate], actor: Actor,
                        now: dt.datetime) -> list[Topic]:
    async with db.write() as s:
        session = await _lock_session(s, session_id)
        _check_staff(actor, session.community_id)
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
        s.add(audit_entry(now, actor.name, "consultation.agenda", "consultation_session", session_id,
                          topics=[t.id for t in added]))
        return added


def outcome_text(session: ConsultationSession, topic: Topic) -> str:
    label = OUTCOME_LABELS.get(topic.outcome or "", "")
    note = f"\n说明：{topic.outcome_note}" if topic.outcome_note else ""
    return f"您在{local(session.starts_at).month}月议事提出的议题「{topic.title[:30]}」\n结果：{label}{note}"


def minutes_refusal(session: ConsultationSession, now: dt.datetime) -> str | None:
    """Why a topic's outcome or the minutes cannot be recorded now (None: they can): not for a cancelled session,
    and only once the meeting has begun. Handlers ask before their first question; the operations check again."""
    if session.status == SessionStatus.CANCELLED:
        return "这场议事已取消。"
    if now < session.starts_at:
        return f"议事{when_text(session.starts_at)}才开始，开会后才能登记议题结果和会议纪要。"
    return None


async def record_outcome(db: Database, topic_id: int, outcome: str, note: str, actor: Actor,
                         now: dt.datetime) -> Topic:
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
        _check_staff(actor, session.community_id)
        why = minutes_refusal(session, now)
        if why:
            raise ConsultationError(why)
        topic.outcome, topic.outcome_note, topic.decided_at = outcome, note[:300] or None, now
        s.add(topic)
        s.add(audit_entry(now, actor.name, "consultation.outcome", "consultation_topic", topic_id, outcome=outcome,
                          note=note))
        if session.status == SessionStatus.HELD and topic.proposer_id:
            await enqueue(s, NoticeKind.CONSULTATION, outcome_text(session, topic),
                          [(topic.proposer_id, f"ct:{topic.id}:outcome:{outcome}")], now)
        return topic


@dataclass(frozen=True)
class MinutesPublished:
    told: int  # proposers told of an outcome (a correction tells only those whose outcome changed)
    correction: bool  # minutes had been published: these went out as a correction

    @property
    def summary(self) -> str:
        """What staff are told, in chat and in the console."""
        if self.correction:
            return (f"更正已发布，将发给所有预约居民；原纪要保留在记录中。"
                    f"{self.told}位提议人的议题结果有变化，会收到通知。")
        return f"纪要已发布，将发给所有预约居民；{self.told}位提议人会收到各自议题的结果。"


CORRECTION_MARK = "【更正 "  # the kept minutes: the first text, then each correction under 【更正 MM-DD】


async def publish_minutes(db: Database, session_id: int, minutes: str, actor: Actor, now: dt.datetime
                          ) -> MinutesPublished:
    """议事纪要: saved, the session is held; the minutes go to those booked, each decided topic's outcome to
    its proposer. Published again, they are a correction: sent as one (the first broadcast's key had swallowed it,
    so nobody heard) and added under the earlier text, which is kept (it had been overwritten)."""
    minutes = minutes.strip()
    if len(minutes) < 10:
        raise ConsultationError("纪要请写得完整一些（至少10个字）。")
    if len(minutes) > MAX_MINUTES:
        raise ConsultationError(f"纪要请控制在{MAX_MINUTES}字以内，可分条概括。")
    async with db.write() as s:
        session = await _lock_session(s, session_id)
        _check_staff(actor, session.community_id)
        why = minutes_refusal(session, now)
        if why:
            raise ConsultationError(why)
        earlier = session.minutes
        corrections = earlier.count(CORRECTION_MARK) if earlier else 0
        kept = f"{earlier}\n{CORRECTION_MARK}{local(now):%m-%d}】{minutes}" if earlier else minutes
        session.status, session.minutes, session.minutes_at, session.updated_at = SessionStatus.HELD, kept, now, now
        s.add(session)
        topics = list((await s.exec(select(Topic).where(Topic.session_id == session_id).limit(200))).all())
        decided = [t for t in topics if t.outcome]
        head = f"【{local(session.starts_at).month}月社区议事纪要{'·更正' if earlier else ''}】"
        lines = [head, minutes[:600]]
        for t in decided[:AGENDA_LIMIT]:
            lines.append(f"· {t.title[:20]}：{OUTCOME_LABELS[t.outcome or '']}")
        key = f"cs:{session_id}:minutes" + (f":{corrections + 1}" if earlier else "")
        await create_system_broadcast(s, key, NoticeKind.CONSULTATION, AudienceKind.SESSION, [session_id],
                                      "议事预约居民（会议纪要）" + ("更正" if earlier else ""), "\n".join(lines), now)
        told = 0
        for t in decided:
            if t.proposer_id:
                told += await enqueue(s, NoticeKind.CONSULTATION, outcome_text(session, t),
                                      [(t.proposer_id, f"ct:{t.id}:outcome:{t.outcome}")], now)
        s.add(audit_entry(now, actor.name, "consultation.minutes", "consultation_session", session_id,
                          decided=len(decided), topics=len(topics), correction=bool(earlier)))
        return MinutesPublished(told, bool(earlier))
