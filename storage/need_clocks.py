"""The needs' clocks, run by the scheduler (scheduler/need_jobs.py): who is told what, and when.

Every operation finds due work from the Need rows' clock columns (storage/needs/), handles at most `limit`
needs, and writes its notices to the outbox in the SAME transaction as the stamp that marks the work done, with
idempotency keys, so a re-run (or a second scheduler) is a no-op. Times are working days on the official
holiday calendar (storage/workdays.py).

    remind_due_soon      B/A deadline within the next working day and 3/4 of the clock gone → the handler
                                                                                       (Need.reminded_at)
    chase_overdue        the working day after the deadline → the community's staff    (Need.chased_at)
    report_to_district   5 more working days overdue → the district's admins           (Need.district_reported_at)
    flag_late_response   first response overdue → the community's staff                (ClockMark "respond")
    feedback_due         B: no public progress for 3 working days → ask the handler, tell the followers;
                         C: after each 17th; 上报区级: weekly → tell the followers     (moves Need.feedback_due_at)
    remind_unrated       resolved and unrated for 24 h → one reminder to the followers (ClockMark "rate")
                         (7 days after resolution it is closed: storage/needs.close_unrated, the state change)
    morning_digest       each community's staff: new to triage, due today, overdue, failed deliveries and
                         urgent notices still waiting for the resident's next message
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import UniqueConstraint, exists, func, update
from sqlmodel import Field, SQLModel, and_, col, select

from storage import claims, workdays
from storage.clock import local
from storage.db import Database, insert_for
from storage.needs import (
    OPEN_STATUSES,
    Need,
    NeedFollower,
    NeedStatus,
    feedback_due,
    format_date,
    format_time,
    summary_line,
)
from storage.org import Community
from storage.outbox import NEEDS_REVIEW, NoticeKind, OutboxMessage, OutboxStatus, enqueue, needs_staff
from storage.residents import Resident
from storage.roles import Role, RoleGrant
from storage.taxonomy import Tier, load_taxonomy
from storage.text import mask_phones

RECIPIENT_LIMIT = 20  # staff told about one need
OPEN = [s.value for s in OPEN_STATUSES]
DISTRICT_AFTER = 5  # working days after the chase
DIGEST_AFTER = dt.time(8, 30)
# "Due soon" is relative to the clock's length: an A need's whole clock (to the end of the next working day) is
# inside the one-working-day horizon, so without this its handler was "reminded" a minute after triage.
REMIND_AT = 0.75


class ClockMark(SQLModel, table=True):
    """A clock that fired for a need at one due time (for clocks without a stamp column on Need)."""

    __tablename__ = "need_clock_mark"
    __table_args__ = (UniqueConstraint("need_id", "stage", "due", name="uq_need_clock_mark"),)

    id: int | None = Field(default=None, primary_key=True)
    need_id: int = Field(index=True)
    stage: str = Field(max_length=16)
    due: dt.datetime
    created_at: dt.datetime


# -- recipients ------------------------------------------------------------------------------------------------


async def _grantees(s, role: Role, scope_id: int | None = None) -> list[int]:
    query = select(RoleGrant.resident_id).where(RoleGrant.role == role.value, RoleGrant.revoked_at.is_(None))
    if scope_id is not None:
        query = query.where(RoleGrant.scope_id == scope_id)
    return list(dict.fromkeys((await s.exec(query.order_by(RoleGrant.id).limit(RECIPIENT_LIMIT))).all()))


async def _handlers(s, need: Need) -> list[int]:
    """Who works on the need: the assignee or the unit's members; else the department's staff (上报区级); else the
    community's staff."""
    if need.assignee_id:
        return [need.assignee_id]
    if need.unit_id:  # 指派 to a unit: its members
        members = await _grantees(s, Role.UNIT_MEMBER, need.unit_id)
        if members:
            return members
    if need.department_id:
        staff = await _grantees(s, Role.DISTRICT_STAFF, need.department_id)
        if staff:
            return staff
    return await _grantees(s, Role.COMMUNITY_STAFF, need.community_id)


async def _followers(s, need: Need) -> list[int]:
    query = select(NeedFollower.resident_id).where(NeedFollower.need_id == need.id).order_by(NeedFollower.id)
    return list(dict.fromkeys((await s.exec(query.limit(RECIPIENT_LIMIT))).all()))


async def _tell(s, recipients: list[int], kind: NoticeKind, text: str, key: str, need: Need, now: dt.datetime) -> int:
    return await enqueue(s, kind, text, [(rid, f"{key}:r:{rid}") for rid in recipients], now,
                         payload={"need_id": need.id, "ticket": need.ticket})


async def _stamp(s, need: Need, column, now: dt.datetime) -> bool:
    """Set a 督办 stamp if unset; False if another run already did (then this run sends nothing)."""
    result = await s.exec(update(Need).where(Need.id == need.id, column.is_(None)).values({column.key: now}))
    return result.rowcount == 1


async def _mark(s, need: Need, stage: str, due: dt.datetime, now: dt.datetime) -> bool:
    stmt = insert_for(s, ClockMark).values(need_id=need.id, stage=stage, due=due, created_at=now)
    result = await s.exec(stmt.on_conflict_do_nothing(index_elements=["need_id", "stage", "due"]))
    return result.rowcount == 1


def _day(moment: dt.datetime) -> dt.date:
    return local(moment).date()


# -- 督办: before, after and long after the deadline ---------------------------------------------------------------


def clock_started(need: Need) -> dt.datetime:
    """When the need's resolution clock (resolve_by) was last set: triage sets it (again on a re-triage), a
    first 不满意 (rated_at) sets a new one for the rework."""
    return max(t for t in (need.triaged_at, need.rated_at, need.created_at) if t is not None)


def reminder_due(need: Need, now: dt.datetime) -> bool:
    """Three quarters of the clock have passed (see REMIND_AT)."""
    started = clock_started(need)
    return now >= started + (need.resolve_by - started) * REMIND_AT


# The due scans, one per clock: each job below reads its work with one of these (bench/scale.py times them on a
# district of 1,000,000 needs).


def remind_query(now: dt.datetime, limit: int = 200):
    horizon = workdays.end_of_working_day(workdays.add_working_days(now, 1))
    return (select(Need).where(col(Need.status).in_(OPEN), Need.resolve_by.is_not(None), Need.resolve_by <= horizon,
                               Need.resolve_by > now, Need.reminded_at.is_(None))
            .order_by(Need.resolve_by).limit(limit))


def chase_query(now: dt.datetime, limit: int = 200):
    return (select(Need).where(col(Need.status).in_(OPEN), Need.resolve_by.is_not(None), Need.resolve_by < now,
                               Need.chased_at.is_(None))
            .order_by(Need.resolve_by).limit(limit))


def district_query(now: dt.datetime, limit: int = 200):
    return (select(Need).where(col(Need.status).in_(OPEN), Need.chased_at.is_not(None), Need.resolve_by < now,
                               Need.district_reported_at.is_(None))
            .order_by(Need.chased_at).limit(limit))


def late_response_query(now: dt.datetime, limit: int = 200):
    marked = exists().where(
        ClockMark.need_id == Need.id, ClockMark.stage == "respond", ClockMark.due == Need.respond_by
    )
    return (select(Need).where(col(Need.status).in_(OPEN), Need.respond_by < now, Need.responded_at.is_(None),
                               ~marked)
            .order_by(Need.respond_by).limit(limit))


def feedback_query(now: dt.datetime, limit: int = 200):
    return (select(Need).where(col(Need.status).in_(OPEN), Need.feedback_due_at.is_not(None),
                               Need.feedback_due_at <= now)
            .order_by(Need.feedback_due_at).limit(limit))


def unrated_query(now: dt.datetime, limit: int = 200):
    marked = exists().where(ClockMark.need_id == Need.id, ClockMark.stage == "rate", ClockMark.due == Need.resolved_at)
    return (select(Need).where(Need.status == NeedStatus.RESOLVED.value, Need.rated_at.is_(None),
                               Need.resolved_at <= now - dt.timedelta(hours=24), ~marked)
            .order_by(Need.resolved_at).limit(limit))


async def remind_due_soon(db: Database, now: dt.datetime, limit: int = 200) -> int:
    """Remind the handler once when the deadline falls on or before the next working day and three quarters of
    the time the clock gave have passed (never just after the deadline was set)."""
    async with db.write() as s:
        needs = (await s.exec(remind_query(now, limit))).all()
        done = 0
        for need in needs:
            if not reminder_due(need, now):
                continue
            if not await _stamp(s, need, Need.reminded_at, now):
                continue
            text = (f"【办理提醒】诉求{need.ticket}将于{format_time(need.resolve_by)}到期。\n"
                    f"内容：{summary_line(need)}\n请抓紧办理，并及时登记进展或办结。")
            key = f"clock:remind:{need.id}:{_day(need.resolve_by)}"
            await _tell(s, await _handlers(s, need), NoticeKind.REMIND, text, key, need, now)
            done += 1
    return done


async def chase_overdue(db: Database, now: dt.datetime, limit: int = 200) -> int:
    """From the working day after the deadline: a chase notice (督办) to the community's staff, once."""
    today = _day(now)
    async with db.write() as s:
        needs = (await s.exec(chase_query(now, limit))).all()
        done = 0
        for need in needs:
            if workdays.next_working_day(_day(need.resolve_by)) > today:
                continue  # the day after the deadline has not come yet
            if not await _stamp(s, need, Need.chased_at, now):
                continue
            text = (f"【督办】诉求{need.ticket}已超过办理时限（{format_date(need.resolve_by)}）仍未办结。\n"
                    f"内容：{summary_line(need)}\n请督促经办人尽快办理。超期5个工作日将上报区级。")
            key = f"clock:chase:{need.id}:{_day(need.resolve_by)}"
            staff = await _grantees(s, Role.COMMUNITY_STAFF, need.community_id)
            await _tell(s, staff, NoticeKind.CHASE, text, key, need, now)
            done += 1
    return done


async def report_to_district(db: Database, now: dt.datetime, limit: int = 200) -> int:
    """5 working days after the chase and still open: report to the district (admins), once."""
    async with db.write() as s:
        needs = (await s.exec(district_query(now, limit))).all()
        done = 0
        for need in needs:
            if workdays.working_days_between(need.chased_at, now) < DISTRICT_AFTER:
                continue
            if not await _stamp(s, need, Need.district_reported_at, now):
                continue
            community = await s.get(Community, need.community_id)
            text = (f"【督办上报】{community.name if community else ''}诉求{need.ticket}"
                    f"超过时限（{format_date(need.resolve_by)}）已逾{DISTRICT_AFTER}个工作日仍未办结。\n"
                    f"内容：{summary_line(need)}")
            key = f"clock:district:{need.id}:{_day(need.resolve_by)}"
            await _tell(s, await _grantees(s, Role.ADMIN), NoticeKind.REPORT, text, key, need, now)
            done += 1
    return done


async def flag_late_response(db: Database, now: dt.datetime, limit: int = 200) -> int:
    """First response overdue (A: 2 working hours; others: 1 working day): tell the community's staff, once."""
    async with db.write() as s:
        needs = (await s.exec(late_response_query(now, limit))).all()
        done = 0
        for need in needs:
            if not await _mark(s, need, "respond", need.respond_by, now):
                continue
            text = (f"【受理超时】诉求{need.ticket}已超过受理时限（{format_time(need.respond_by)}）尚未受理。\n"
                    f"内容：{summary_line(need)}\n请尽快分流受理。")
            key = f"clock:respond:{need.id}:{need.respond_by.timestamp():.0f}"
            staff = await _grantees(s, Role.COMMUNITY_STAFF, need.community_id)
            await _tell(s, staff, NoticeKind.CHASE, text, key, need, now)
            done += 1
    return done


# -- feedback to residents ------------------------------------------------------------------------------------------


def _still_working(need: Need) -> str:
    note = f"\n最新进展：{mask_phones(need.latest_note)}" if need.latest_note else ""
    if need.tier == Tier.C.value:
        head = "您反映的问题已纳入社区定期办理计划，本月阳光17议后仍在按计划推进。"
    elif need.status == NeedStatus.ESCALATED.value or need.tier == Tier.DISTRICT.value:
        head = "您的诉求已上报区级部门，仍在办理中。"
    else:
        head = "您反映的问题仍在办理中，我们会继续跟进。"
    return f"【诉求进展】{need.ticket}\n{head}{note}\n回复「进度 {need.ticket}」查看详情。"


async def feedback_due_now(db: Database, now: dt.datetime, limit: int = 200) -> int:
    """Followers hear progress when `feedback_due_at` passes (B: 3 working days without a note, C: after the 17th,
    上报区级: weekly); for B the handler is asked for a progress note. The due time then moves on."""
    taxonomy = load_taxonomy()
    async with db.write() as s:
        needs = (await s.exec(feedback_query(now, limit))).all()
        done = 0
        for need in needs:
            due = need.feedback_due_at
            tier = Tier.DISTRICT.value if need.status == NeedStatus.ESCALATED.value else need.tier
            following = feedback_due(taxonomy, tier, now)
            moved = await s.exec(
                update(Need).where(Need.id == need.id, Need.feedback_due_at == due).values(feedback_due_at=following)
            )
            if moved.rowcount != 1:
                continue  # another run (or a new progress note) got there first
            key = f"clock:feedback:{need.id}:{due.timestamp():.0f}"
            await _tell(s, await _followers(s, need), NoticeKind.FEEDBACK, _still_working(need), key, need, now)
            if tier == Tier.B.value:
                ask = (f"【进展提醒】诉求{need.ticket}已3个工作日没有进展记录。\n内容：{summary_line(need)}\n"
                       f"请登记一条办理进展，居民会收到通知。")
                await _tell(s, await _handlers(s, need), NoticeKind.REMIND, ask, key + ":ask", need, now)
            done += 1
    return done


async def remind_unrated(db: Database, now: dt.datetime, limit: int = 200) -> int:
    """A need resolved 24 hours ago and still unrated: one reminder to its followers."""
    async with db.write() as s:
        needs = (await s.exec(unrated_query(now, limit))).all()
        done = 0
        for need in needs:
            if not await _mark(s, need, "rate", need.resolved_at, now):
                continue
            text = (f"【评价提醒】{need.ticket}已办结。\n内容：{summary_line(need)}\n"
                    "办得怎么样？请直接回复：满意 / 基本满意 / 不满意（可接着写意见）。")
            key = f"clock:rate:{need.id}:{need.resolved_at.timestamp():.0f}"
            # Only the one who rates is asked (a neighbour who 附议'd was reminded to rate and then refused).
            await _tell(s, [need.rater_id] if need.rater_id else [], NoticeKind.RATING, text, key, need, now)
            done += 1
    return done


# -- the morning digest ----------------------------------------------------------------------------------------------


async def community_digest(db: Database, community_id: int, now: dt.datetime) -> dict[str, int]:
    """New to triage, due today, overdue, failed deliveries (to this community's residents), bindings waiting
    for staff to check (待核实)."""
    end_of_today = dt.datetime.combine(_day(now), dt.time(23, 59, 59), tzinfo=local(now).tzinfo)
    open_here = and_(Need.community_id == community_id, col(Need.status).in_(OPEN))

    async def count(s, query) -> int:
        return (await s.exec(query)).one()

    async with db.read() as s:
        base = select(func.count()).select_from(Need)
        return {
            "new": await count(s, base.where(Need.community_id == community_id,
                                             Need.status == NeedStatus.REPORTED.value)),
            "due_today": await count(s, base.where(open_here, Need.resolve_by >= now, Need.resolve_by <= end_of_today)),
            "overdue": await count(s, base.where(open_here, Need.resolve_by < now)),
            "failed": await count(s, select(func.count()).select_from(OutboxMessage)
                                  .join(Resident, Resident.id == OutboxMessage.resident_id)
                                  .where(Resident.community_id == community_id,
                                         col(OutboxMessage.status).in_(NEEDS_REVIEW))),
            "waiting": await count(s, select(func.count()).select_from(OutboxMessage)
                                   .join(Resident, Resident.id == OutboxMessage.resident_id)
                                   .where(Resident.community_id == community_id, needs_staff(),
                                          OutboxMessage.status == OutboxStatus.WAITING)),
            "claims": await claims.pending_count(s, community_id),
        }


def digest_text(name: str, day: dt.date, c: dict[str, int]) -> str:
    waiting = c.get("waiting", 0)
    return (f"【每日汇总】{name} {day.month}月{day.day}日\n"
            f"1. 待分流的新诉求：{c['new']}件\n2. 今天到期：{c['due_today']}件\n"
            f"3. 已超期：{c['overdue']}件\n4. 消息发送失败：{c['failed']}条"
            + (f"，紧急通知待送达：{waiting}条" if waiting else "")
            + ("（回复「投递失败」查看）" if c["failed"] or waiting else "")
            + (f"\n5. 绑定待核实：{c['claims']}条（回复「待核实」处理）" if c.get("claims") else ""))


async def morning_digest(db: Database, now: dt.datetime, after: dt.time = DIGEST_AFTER, limit: int = 100) -> int:
    """Once a working day after 08:30: each community's staff get their digest (communities with staff only)."""
    if not workdays.is_working_day(now) or local(now).time() < after:
        return 0
    day = _day(now)
    async with db.read() as s:
        communities = (await s.exec(
            select(Community).where(exists().where(
                RoleGrant.role == Role.COMMUNITY_STAFF.value, RoleGrant.scope_id == Community.id,
                RoleGrant.revoked_at.is_(None)))
            .order_by(Community.id).limit(limit)
        )).all()
    sent = 0
    for community in communities:
        counts = await community_digest(db, community.id, now)
        async with db.write() as s:
            staff = await _grantees(s, Role.COMMUNITY_STAFF, community.id)
            text = digest_text(community.name, day, counts)
            sent += await enqueue(s, NoticeKind.DIGEST, text,
                                  [(rid, f"digest:{day}:{community.id}:r:{rid}") for rid in staff], now)
    return sent
