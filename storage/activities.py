"""志愿活动: activities, sign-up with capacity and waitlist, check-in/out codes and the organiser's confirmation.

Hours are credited only when both sides confirm: the volunteer checks in and out with the codes the organiser
shows, and the organiser confirms attendance (`confirm_attendance`), which credits each attendee's hours (in
half-hour steps) as points through the ledger, in the same transaction, once per sign-up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import UniqueConstraint, case, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select

from storage.actor import Actor
from storage.clock import local
from storage.db import Database
from storage.outbox import NoticeKind, NoticePriority, enqueue
from storage.points import (
    PointsPolicy,
    PointsRefused,
    credit_service,
    current_policy,
    hours_text,
)
from storage.policy import Can, allows
from storage.residents import Resident
from storage.rewards import new_code, normalise_code
from storage.roles import audit_entry

MAX_CAPACITY = 500
CHECK_IN_EARLY = dt.timedelta(hours=1)  # check-in opens an hour before the start
CHECK_OUT_LATE = dt.timedelta(hours=6)  # check-out closes six hours after the end


class ActivityStatus:
    OPEN = "open"
    CANCELLED = "cancelled"


class SignupStatus:
    SIGNED = "signed"
    WAITLIST = "waitlist"
    CANCELLED = "cancelled"


class Activity(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    community_id: int = Field(foreign_key="community.id", index=True)
    title: str = Field(max_length=64)
    place: str = Field(max_length=64)
    starts_at: dt.datetime = Field(index=True)
    ends_at: dt.datetime
    capacity: int
    half_hours: int  # service time credited per attendee, in half-hour steps
    project_ref: str = Field(default="", max_length=32)  # a service project's number, when there is one
    need_id: int | None = None  # the need this activity answers, when there is one
    checkin_code: str = Field(max_length=8, unique=True)
    checkout_code: str = Field(max_length=8, unique=True)
    status: str = Field(default=ActivityStatus.OPEN, max_length=16)
    created_by: str = Field(max_length=64)
    created_at: dt.datetime


class ActivitySignup(SQLModel, table=True):
    __tablename__ = "activity_signup"
    __table_args__ = (UniqueConstraint("activity_id", "resident_id", name="uq_activity_signup"),)

    id: int | None = Field(default=None, primary_key=True)
    activity_id: int = Field(foreign_key="activity.id", index=True)
    resident_id: int = Field(foreign_key="resident.id", index=True)
    status: str = Field(max_length=16)
    queued_at: dt.datetime  # waitlist order
    checked_in_at: dt.datetime | None = None
    checked_out_at: dt.datetime | None = None
    confirmed_at: dt.datetime | None = None
    confirmed_by: str | None = Field(default=None, max_length=64)
    points: int = 0


def when_text(activity: Activity) -> str:
    start, end = local(activity.starts_at), local(activity.ends_at)
    return f"{start.month}月{start.day}日 {start:%H:%M}-{end:%H:%M}"  # 12月7日, as every other date reads


# ---------------------------------------------------------------------------------------------- publishing


async def publish_activity(
    db: Database,
    actor: Actor,
    community_id: int,
    *,
    title: str,
    place: str,
    starts_at: dt.datetime,
    ends_at: dt.datetime,
    capacity: int,
    half_hours: int,
    now: dt.datetime,
    project_ref: str = "",
    need_id: int | None = None,
) -> Activity:
    if not allows(actor, Can.RUN_COMMUNITY, community_id):
        raise PointsRefused("只能为本社区发布志愿活动。")
    if not title.strip() or not place.strip():
        raise PointsRefused("请填写活动名称和地点。")
    if starts_at <= now:
        raise PointsRefused("活动开始时间须在现在之后。")
    if ends_at <= starts_at:
        raise PointsRefused("结束时间须晚于开始时间。")
    if not 1 <= capacity <= MAX_CAPACITY:
        raise PointsRefused(f"人数须在 1 到 {MAX_CAPACITY} 之间。")
    if not 1 <= half_hours <= 48:
        raise PointsRefused("记录时长须在 0.5 到 24 小时之间，按半小时计。")
    for _attempt in range(5):
        activity = Activity(
            community_id=community_id, title=title.strip()[:64], place=place.strip()[:64], starts_at=starts_at,
            ends_at=ends_at, capacity=capacity, half_hours=half_hours, project_ref=project_ref[:32],
            need_id=need_id, checkin_code=new_code(), checkout_code=new_code(), created_by=actor.name, created_at=now,
        )
        try:
            async with db.write() as s:
                s.add(activity)
                await s.flush()
                s.add(audit_entry(now, actor.name, "activity.publish", "activity", activity.id, title=activity.title))
            return activity
        except IntegrityError:  # a code collision: draw new codes
            continue
    raise PointsRefused("系统繁忙，请稍后再试。")


async def get_activity(db: Database, activity_id: int) -> Activity | None:
    async with db.read() as s:
        return await s.get(Activity, activity_id)


@dataclass
class Listed:
    activity: Activity
    signed: int
    mine: str | None  # the resident's sign-up status, if any


async def upcoming(db: Database, community_id: int, resident_id: int | None, now: dt.datetime, limit: int = 8) -> list[
    Listed
]:
    """Open activities of the community that have not ended, soonest first, with counts and the resident's status."""
    async with db.read() as s:
        acts = list(
            (
                await s.exec(
                    select(Activity)
                    .where(
                        Activity.community_id == community_id,
                        Activity.status == ActivityStatus.OPEN,
                        Activity.ends_at > now,
                    )
                    .order_by(Activity.starts_at, Activity.id)
                    .limit(limit)
                )
            ).all()
        )
        ids = [a.id for a in acts]
        counts: dict[int, int] = {}
        mine: dict[int, str] = {}
        if ids:
            rows = await s.exec(
                select(ActivitySignup.activity_id, func.count())
                .where(col(ActivitySignup.activity_id).in_(ids), ActivitySignup.status == SignupStatus.SIGNED)
                .group_by(ActivitySignup.activity_id)
            )
            counts = {a: n for a, n in rows.all()}
            if resident_id is not None:
                own = await s.exec(
                    select(ActivitySignup.activity_id, ActivitySignup.status).where(
                        col(ActivitySignup.activity_id).in_(ids), ActivitySignup.resident_id == resident_id
                    )
                )
                mine = {a: st for a, st in own.all() if st != SignupStatus.CANCELLED}
    return [Listed(a, counts.get(a.id, 0), mine.get(a.id)) for a in acts]


# ---------------------------------------------------------------------------------------------- signing up


@dataclass
class SignedUp:
    activity: Activity
    status: str  # signed | waitlist
    position: int = 0  # place on the waitlist
    repeated: bool = False


async def _lock_activity(s, activity_id: int) -> Activity | None:
    query = select(Activity).where(Activity.id == activity_id).with_for_update()
    return (await s.exec(query.execution_options(populate_existing=True))).first()


async def sign_up(db: Database, activity_id: int, resident: Resident, now: dt.datetime) -> SignedUp:
    """A seat while there is room, otherwise the waitlist. Signing up twice is a no-op."""
    if resident.community_id is None:
        raise PointsRefused("请先绑定住址后再报名。")
    async with db.write() as s:
        activity = await _lock_activity(s, activity_id)  # serialises sign-ups for this activity (PostgreSQL)
        if activity is None or activity.community_id != resident.community_id:
            raise PointsRefused("没有找到这个活动。")
        if activity.status != ActivityStatus.OPEN:
            raise PointsRefused("这个活动已取消。")
        if activity.starts_at <= now:
            raise PointsRefused("活动已经开始，不能再报名了。")
        existing = (
            await s.exec(
                select(ActivitySignup).where(
                    ActivitySignup.activity_id == activity_id, ActivitySignup.resident_id == resident.id
                )
            )
        ).first()
        if existing is not None and existing.status != SignupStatus.CANCELLED:
            position = await _position(s, existing) if existing.status == SignupStatus.WAITLIST else 0
            return SignedUp(activity, existing.status, position, repeated=True)
        signed = (
            await s.exec(
                select(func.count()).where(
                    ActivitySignup.activity_id == activity_id, ActivitySignup.status == SignupStatus.SIGNED
                )
            )
        ).one()
        status = SignupStatus.SIGNED if signed < activity.capacity else SignupStatus.WAITLIST
        row = existing or ActivitySignup(activity_id=activity_id, resident_id=resident.id, status=status, queued_at=now)
        row.status, row.queued_at = status, now
        s.add(row)
        await s.flush()
        position = await _position(s, row) if status == SignupStatus.WAITLIST else 0
        return SignedUp(activity, status, position)


async def _position(s, row: ActivitySignup) -> int:
    ahead = await s.exec(
        select(func.count()).where(
            ActivitySignup.activity_id == row.activity_id,
            ActivitySignup.status == SignupStatus.WAITLIST,
            (ActivitySignup.queued_at < row.queued_at)
            | ((ActivitySignup.queued_at == row.queued_at) & (ActivitySignup.id < row.id)),
        )
    )
    return int(ahead.one()) + 1


async def cancel_signup(db: Database, activity_id: int, resident: Resident, now: dt.datetime) -> Resident | None:
    """Cancel before the start; a freed seat goes to the first on the waitlist (who is told). Returns them."""
    async with db.write() as s:
        activity = await _lock_activity(s, activity_id)
        if activity is None:
            raise PointsRefused("没有找到这个活动。")
        row = (
            await s.exec(
                select(ActivitySignup).where(
                    ActivitySignup.activity_id == activity_id, ActivitySignup.resident_id == resident.id
                )
            )
        ).first()
        if row is None or row.status == SignupStatus.CANCELLED:
            raise PointsRefused("您没有报名这个活动。")
        if activity.status != ActivityStatus.OPEN:
            raise PointsRefused("这个活动已由社区取消，无需再取消报名。")
        if activity.starts_at <= now:
            raise PointsRefused("活动已经开始，不能取消报名了。如不能到场，请联系组织者。")
        was_signed = row.status == SignupStatus.SIGNED
        row.status = SignupStatus.CANCELLED
        s.add(row)
        if not was_signed:
            return None
        first = (
            await s.exec(
                select(ActivitySignup)
                .where(ActivitySignup.activity_id == activity_id, ActivitySignup.status == SignupStatus.WAITLIST)
                .order_by(ActivitySignup.queued_at, ActivitySignup.id)
                .limit(1)
            )
        ).first()
        if first is None:
            return None
        first.status = SignupStatus.SIGNED
        s.add(first)
        await enqueue(
            s, NoticeKind.ACTIVITY,
            f"好消息：志愿活动「{activity.title}」（{when_text(activity)}，{activity.place}）有空位了，"
            "您已从候补转为正式报名。不能参加请回复「志愿活动」取消。",
            [(first.resident_id, f"activity:{activity.id}:promoted:{first.id}:{now.isoformat()}")], now,
        )
        return await s.get(Resident, first.resident_id)


# ---------------------------------------------------------------------------------------------- attendance


async def check_in(db: Database, resident: Resident, code: str, now: dt.datetime) -> Activity:
    return await _check(db, resident, code, now, out=False)


async def check_out(db: Database, resident: Resident, code: str, now: dt.datetime) -> Activity:
    return await _check(db, resident, code, now, out=True)


def _check_out_refusal(activity: Activity, now: dt.datetime) -> str | None:
    """Signing out is possible from the activity's start until six hours after its end."""
    if now < activity.starts_at:
        return f"「{activity.title}」{local(activity.starts_at):%m-%d %H:%M}才开始，开始后才能签退。"
    if now > activity.ends_at + CHECK_OUT_LATE:
        return "已过签退时间，请联系组织者确认时长。"
    return None


async def check_out_refusal(db: Database, resident: Resident, now: dt.datetime) -> str | None:
    """Asked before the sign-out code is: why the resident cannot sign out now, when every activity they checked
    in to and have not signed out of has yet to begin (None otherwise: the code decides, and `check_out` checks
    again)."""
    async with db.read() as s:
        rows = (
            await s.exec(
                select(Activity)
                .join(ActivitySignup, col(ActivitySignup.activity_id) == Activity.id)
                .where(
                    ActivitySignup.resident_id == resident.id,
                    ActivitySignup.status == SignupStatus.SIGNED,
                    col(ActivitySignup.checked_in_at).is_not(None),
                    col(ActivitySignup.checked_out_at).is_(None),
                    Activity.status == ActivityStatus.OPEN,
                    Activity.ends_at >= now - CHECK_OUT_LATE,
                )
                .order_by(Activity.starts_at, Activity.id)
                .limit(20)
            )
        ).all()
    if not rows or any(_check_out_refusal(a, now) is None for a in rows):
        return None
    return _check_out_refusal(rows[0], now)


async def _check(db: Database, resident: Resident, code: str, now: dt.datetime, *, out: bool) -> Activity:
    code = normalise_code(code)
    column = Activity.checkout_code if out else Activity.checkin_code
    word = "签退" if out else "签到"
    async with db.write() as s:
        activity = (await s.exec(select(Activity).where(column == code))).first()
        if activity is None:
            raise PointsRefused(f"{word}码不对，请核对组织者出示的{word}码。")
        if activity.status != ActivityStatus.OPEN:
            raise PointsRefused(f"「{activity.title}」已取消，不能{word}。")
        row = (
            await s.exec(
                select(ActivitySignup).where(
                    ActivitySignup.activity_id == activity.id, ActivitySignup.resident_id == resident.id
                )
            )
        ).first()
        if row is None or row.status != SignupStatus.SIGNED:
            raise PointsRefused(f"您没有报名（或仍在候补）「{activity.title}」，不能{word}。")
        if not out:
            if now < activity.starts_at - CHECK_IN_EARLY:
                raise PointsRefused(f"还没到签到时间，活动开始前 1 小时可签到（{when_text(activity)}）。")
            if now > activity.ends_at:
                raise PointsRefused("活动已结束，不能再签到了。")
            if row.checked_in_at is None:
                row.checked_in_at = now
        else:
            why = _check_out_refusal(activity, now)
            if why:
                raise PointsRefused(why)
            if row.checked_in_at is None:
                raise PointsRefused("请先签到，再签退。")
            if row.checked_out_at is None:
                row.checked_out_at = now
        s.add(row)
        return activity


@dataclass
class Attendee:
    signup: ActivitySignup
    resident: Resident


async def attendance(db: Database, activity_id: int, limit: int = MAX_CAPACITY) -> list[Attendee]:
    async with db.read() as s:
        rows = await s.exec(
            select(ActivitySignup, Resident)
            .join(Resident, Resident.id == ActivitySignup.resident_id)
            .where(ActivitySignup.activity_id == activity_id, ActivitySignup.status == SignupStatus.SIGNED)
            .order_by(ActivitySignup.id)
            .limit(limit)
        )
        return [Attendee(a, r) for a, r in rows.all()]


@dataclass
class Confirmed:
    activity: Activity
    credited: int  # attendees credited now
    points_each: int
    skipped: int  # signed up but did not check in and out
    already: int  # credited before


async def confirm_attendance(
    db: Database,
    actor: Actor,
    activity_id: int,
    now: dt.datetime,
    *,
    policy: PointsPolicy | None = None,
) -> Confirmed:
    """确认时长: the organiser confirms; everyone who checked in and out is credited the activity's hours, once."""
    policy = policy or current_policy()
    async with db.write() as s:
        activity = await _lock_activity(s, activity_id)
        if activity is None or not allows(actor, Can.RUN_COMMUNITY, activity.community_id):
            raise PointsRefused("没有找到这个活动（只能确认本社区的活动）。")
        if activity.status != ActivityStatus.OPEN:
            raise PointsRefused("这个活动已取消，不能确认时长。")
        if now < activity.starts_at:
            raise PointsRefused("活动还没开始，结束后再确认时长。")
        rows = list(
            (
                await s.exec(
                    select(ActivitySignup)
                    .where(ActivitySignup.activity_id == activity_id, ActivitySignup.status == SignupStatus.SIGNED)
                    .order_by(ActivitySignup.id)
                    .limit(MAX_CAPACITY)
                )
            ).all()
        )
        credited = skipped = already = 0
        points_each = policy.points_for(activity.half_hours)
        for row in rows:
            if row.confirmed_at is not None:
                already += 1
                continue
            if row.checked_in_at is None or row.checked_out_at is None:
                skipped += 1
                continue
            credit = await credit_service(
                s, row.resident_id, activity.half_hours, reason=f"志愿活动「{activity.title}」",
                reference=f"activity:{activity.id}", actor=actor.name, now=now, key=f"earn:signup:{row.id}",
                policy=policy,
            )
            await s.exec(
                update(ActivitySignup)
                .where(ActivitySignup.id == row.id)
                .values(confirmed_at=now, confirmed_by=actor.name, points=credit.points)
            )
            await enqueue(
                s, NoticeKind.POINTS,
                f"感谢您参加「{activity.title}」！组织者已确认服务时长 {hours_text(activity.half_hours)} 小时，"
                f"积分 +{credit.points}。回复「积分」查看。",
                [(row.resident_id, f"points:earn:signup:{row.id}")], now,
            )
            credited += 1
        s.add(audit_entry(now, actor.name, "activity.confirm", "activity", activity.id, credited=credited,
                          skipped=skipped))
        return Confirmed(activity, credited, points_each, skipped, already)


# ---------------------------------------------------------------------------------------------- cancelling

CANCEL_BATCH = 200  # sign-ups read per query while telling everyone


@dataclass
class CancelPreview:
    activity: Activity
    signed: int
    waitlisted: int


@dataclass
class Cancelled:
    activity: Activity
    notified: int  # signed-up and waitlisted residents told


def cancel_notice_prefix(activity_id: int) -> str:
    """The idempotency keys of a cancellation's notices start with this (storage.outbox.delivery_counts)."""
    return f"activity:{activity_id}:cancelled:"


async def _cancel_refusal(s, actor: Actor, activity: Activity | None, now: dt.datetime) -> Activity:
    """The rules for 取消活动, checked by the preview and again under the lock."""
    if activity is None or not allows(actor, Can.RUN_COMMUNITY, activity.community_id):
        raise PointsRefused("没有找到这个活动（只能取消本社区的活动）。")
    if activity.status == ActivityStatus.CANCELLED:
        raise PointsRefused(f"「{activity.title}」已经取消过了。")
    confirmed = (
        await s.exec(
            select(func.count()).where(
                ActivitySignup.activity_id == activity.id, col(ActivitySignup.confirmed_at).is_not(None)
            )
        )
    ).one()
    if confirmed:
        raise PointsRefused(f"「{activity.title}」已确认过志愿者的服务时长，不能取消。")
    if activity.starts_at <= now:
        raise PointsRefused(f"「{activity.title}」已经开始，不能取消了。")
    return activity


async def _counts(s, activity_id: int) -> dict[str, int]:
    rows = await s.exec(
        select(ActivitySignup.status, func.count())
        .where(ActivitySignup.activity_id == activity_id)
        .group_by(ActivitySignup.status)
    )
    return {status: int(n) for status, n in rows.all()}


async def cancel_preview(db: Database, actor: Actor, activity_id: int, now: dt.datetime) -> CancelPreview:
    """What 取消活动 would do (who will be told); refuses exactly as `cancel_activity` would."""
    async with db.read() as s:
        activity = await _cancel_refusal(s, actor, await s.get(Activity, activity_id), now)
        counts = await _counts(s, activity_id)
    return CancelPreview(activity, counts.get(SignupStatus.SIGNED, 0), counts.get(SignupStatus.WAITLIST, 0))


async def cancel_activity(
    db: Database, actor: Actor, activity_id: int, reason: str, now: dt.datetime
) -> Cancelled:
    """取消活动: community staff (or an admin) call off an activity before it starts, with a reason.

    In one transaction: the activity is marked cancelled (it leaves the lists; sign-up and check-in refuse it),
    everyone signed up or waitlisted gets one notice with the reason, and the audit row is written.
    """
    reason = " ".join(reason.split())[:100]
    if len(reason) < 2:
        raise PointsRefused("请写明取消的原因（会告知报名的居民）。")
    async with db.write() as s:
        activity = await _cancel_refusal(s, actor, await _lock_activity(s, activity_id), now)
        done = await s.exec(
            update(Activity)
            .where(Activity.id == activity_id, Activity.status == ActivityStatus.OPEN)
            .values(status=ActivityStatus.CANCELLED)
        )
        if done.rowcount != 1:
            raise PointsRefused(f"「{activity.title}」刚刚已被取消。")
        activity.status = ActivityStatus.CANCELLED
        text = (
            f"【活动取消】您报名的志愿活动「{activity.title}」（{when_text(activity)}，{activity.place}）已取消。\n"
            f"原因：{reason}\n给您带来不便，敬请谅解。回复「志愿活动」看看其他活动。"
        )
        notified, last_id = 0, 0
        while True:  # every sign-up, a batch at a time
            batch = list(
                (
                    await s.exec(
                        select(ActivitySignup.id, ActivitySignup.resident_id)
                        .where(
                            ActivitySignup.activity_id == activity_id,
                            col(ActivitySignup.status).in_([SignupStatus.SIGNED, SignupStatus.WAITLIST]),
                            ActivitySignup.id > last_id,
                        )
                        .order_by(ActivitySignup.id)
                        .limit(CANCEL_BATCH)
                    )
                ).all()
            )
            notified += await enqueue(
                s, NoticeKind.ACTIVITY, text,
                [(resident_id, f"{cancel_notice_prefix(activity_id)}{signup_id}") for signup_id, resident_id in batch],
                now, priority=NoticePriority.URGENT,  # plans changed: told at once, even at night
            )
            if len(batch) < CANCEL_BATCH:
                break
            last_id = batch[-1][0]
        s.add(audit_entry(now, actor.name, "activity.cancel", "activity", activity_id, reason=reason,
                          notified=notified))
        return Cancelled(activity, notified)


@dataclass
class ToConfirm:
    activity: Activity
    signed: int
    ready: int  # checked in and out, not yet confirmed
    confirmed: int


async def activities_to_confirm(
    db: Database, actor: Actor, now: dt.datetime, *, days: int = 30, limit: int = 20
) -> list[ToConfirm]:
    """The open activities of the actor's communities that started in the last `days` days, newest first, with
    their sign-up counts: what 确认时长 is asked about."""
    communities = actor.communities
    if communities is not None and not communities:
        return []
    query = select(Activity).where(
        Activity.status == ActivityStatus.OPEN, Activity.starts_at <= now,
        Activity.starts_at >= now - dt.timedelta(days=days),
    )
    if communities is not None:
        query = query.where(col(Activity.community_id).in_(sorted(communities)))
    async with db.read() as s:
        activities = list((await s.exec(query.order_by(col(Activity.starts_at).desc()).limit(limit))).all())
        counts = {}
        if activities:
            rows = await s.exec(
                select(ActivitySignup.activity_id,
                       func.count(),
                       func.count(ActivitySignup.confirmed_at),
                       func.sum(case((col(ActivitySignup.checked_in_at).is_not(None)
                                      & col(ActivitySignup.checked_out_at).is_not(None)
                                      & col(ActivitySignup.confirmed_at).is_(None), 1), else_=0)))
                .where(col(ActivitySignup.activity_id).in_([a.id for a in activities]),
                       ActivitySignup.status == SignupStatus.SIGNED)
                .group_by(col(ActivitySignup.activity_id))
            )
            counts = {a: (n, int(r or 0), c) for a, n, c, r in rows.all()}
    return [ToConfirm(a, *counts.get(a.id, (0, 0, 0))) for a in activities]
