"""志愿活动 through the gateway: staff publish, residents sign up, check in and out, staff confirm the hours."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

from sqlmodel import select

from storage import activities as act
from storage.actor import actor_for
from storage.outbox import OutboxMessage
from storage.points import PointsPolicy, audit_points, balance_of
from storage.roles import Role
from tests.factories import grant, make_district, make_resident

TZ = dt.timezone(dt.timedelta(hours=8))


async def world(db):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B2"], name="李社工", phone="13900000009")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    return d, staff


async def publish_by_chat(phone, clock) -> tuple[int, str, str]:
    steps = ["发布活动", "清扫楼道", "11月28日 9:00-11:00", "1号楼楼下", "2人", "2"]  # 「2人」 as staff write it
    for text in steps:
        await phone.text("o_staff", text)
    reply = (await phone.text("o_staff", "1")).text
    activity_id = int(re.search(r"活动编号 (\d+)", reply).group(1))
    checkin = re.search(r"签到码：(\w+)", reply).group(1)
    checkout = re.search(r"签退码：(\w+)", reply).group(1)
    return activity_id, checkin, checkout


async def test_volunteer_signs_up_checks_in_and_out_and_gets_points_when_the_organiser_confirms(
    db, clock, phone, backend
):
    d, _staff = await world(db)
    volunteer = await make_resident(db, "o_vol", d.buildings["B1"], name="王芳", phone="13800000001")

    activity_id, checkin, checkout = await publish_by_chat(phone, clock)

    listing = (await phone.text("o_vol", "志愿活动")).text
    assert "清扫楼道" in listing and "余2" in listing
    detail = (await phone.text("o_vol", "1")).text
    assert "1号楼楼下" in detail and "2 小时（20 积分）" in detail
    signed = (await phone.text("o_vol", "1")).text
    assert signed.startswith("报名成功") and "签到" in signed

    early = (await phone.text("o_vol", f"签到 {checkin}")).text
    assert "还没到签到时间" in early
    clock.set(dt.datetime(2026, 11, 28, 8, 50, tzinfo=TZ))
    assert "签到成功" in (await phone.text("o_vol", f"签到 {checkin.lower()}")).text
    clock.set(dt.datetime(2026, 11, 28, 11, 0, tzinfo=TZ))
    assert "签退成功" in (await phone.text("o_vol", "签退")).text + (await phone.text("o_vol", checkout)).text

    assert await balance_of(db, volunteer.id) == 0  # hours count only once the organiser confirms
    # 确认时长 alone lists the activities that may need it (it had shown only the command's format).
    listed = (await phone.text("o_staff", "确认时长")).text
    assert listed.startswith("近30天的活动，回复序号确认时长：\n1. 11月28日 清扫楼道（待确认 1 人）")
    picked = (await phone.text("o_staff", "1")).text
    await phone.text("o_staff", "取消")
    summary = (await phone.text("o_staff", f"确认时长 {activity_id}")).text
    assert picked == summary and "待确认：1 人" in summary and "王芳" in summary
    confirmed = (await phone.text("o_staff", "1")).text
    assert "已确认 1 人，每人 +20 积分" in confirmed
    again = (await phone.text("o_staff", f"确认时长 {activity_id}")).text
    assert "没有待确认" in again and "补录积分" not in again  # nobody missed signing: nothing to make up

    points = (await phone.text("o_vol", "积分")).text
    assert "余额 20 分" in points and "今年服务 2 小时" in points and "+20 志愿活动「清扫楼道」" in points
    async with db.read() as s:
        notices = (await s.exec(select(OutboxMessage).where(OutboxMessage.resident_id == volunteer.id))).all()
    assert any("积分 +20" in n.text for n in notices)
    assert await audit_points(db) == []


async def test_a_full_activity_puts_the_next_volunteer_on_the_waitlist_and_a_cancellation_promotes_them(
    db, clock, phone, backend
):
    d, staff = await world(db)
    first = await make_resident(db, "o_first", d.buildings["B1"], phone="13800000011")
    second = await make_resident(db, "o_second", d.buildings["B1"], phone="13800000012")
    actor = await actor_for(db, staff.id)
    activity = await act.publish_activity(
        db, actor, d.communities["C1"].id, title="助老送餐", place="社区食堂",
        starts_at=clock.now() + dt.timedelta(days=1), ends_at=clock.now() + dt.timedelta(days=1, hours=2),
        capacity=1, half_hours=4, now=clock.now(),
    )

    await phone.text("o_first", "志愿活动")
    await phone.text("o_first", "1")
    assert "报名成功" in (await phone.text("o_first", "1")).text
    await phone.text("o_second", "志愿活动")
    await phone.text("o_second", "1")
    assert "候补第1位" in (await phone.text("o_second", "1")).text

    await phone.text("o_first", "志愿活动")
    assert "已报名" in (await phone.text("o_first", "1")).text
    # The card's 1 was 报名 a moment ago: the same key now asks before it cancels.
    assert (await phone.text("o_first", "1")).text == "确定取消报名吗？\n1. 确定取消\n2. 保留报名"
    assert (await phone.text("o_first", "取消")).text == "已退出，您的报名仍然保留。"
    assert [p.resident.id for p in await act.attendance(db, activity.id)] == [first.id]
    await phone.text("o_first", "志愿活动")
    await phone.text("o_first", "1")
    await phone.text("o_first", "1")
    assert "已取消报名" in (await phone.text("o_first", "确定")).text

    people = await act.attendance(db, activity.id)
    assert [p.resident.id for p in people] == [second.id]
    async with db.read() as s:
        notices = (await s.exec(select(OutboxMessage).where(OutboxMessage.resident_id == second.id))).all()
    assert len(notices) == 1 and "候补转为正式报名" in notices[0].text
    assert first.id not in [p.resident.id for p in people]


async def test_many_volunteers_signing_up_at_once_never_overfill_the_activity(db, clock, backend):
    d, staff = await world(db)
    actor = await actor_for(db, staff.id)
    activity = await act.publish_activity(
        db, actor, d.communities["C1"].id, title="植树", place="中心公园",
        starts_at=clock.now() + dt.timedelta(days=2), ends_at=clock.now() + dt.timedelta(days=2, hours=3),
        capacity=5, half_hours=6, now=clock.now(),
    )
    people = [
        await make_resident(db, f"o_tree{i}", d.buildings["B1"], phone=f"1380000{i:04d}") for i in range(20)
    ]

    results = await asyncio.gather(*(act.sign_up(db, activity.id, p, clock.now()) for p in people))
    again = await asyncio.gather(*(act.sign_up(db, activity.id, p, clock.now()) for p in people[:3]))

    assert sum(r.status == act.SignupStatus.SIGNED for r in results) == 5
    assert sorted(r.position for r in results if r.status == act.SignupStatus.WAITLIST) == list(range(1, 16))
    assert all(r.repeated for r in again)
    assert len(await act.attendance(db, activity.id)) == 5


async def test_confirmation_credits_only_those_who_checked_in_and_out_and_only_once(db, clock, backend):
    d, staff = await world(db)
    actor = await actor_for(db, staff.id)
    policy = PointsPolicy(points_per_hour=12)
    activity = await act.publish_activity(
        db, actor, d.communities["C1"].id, title="反诈宣传", place="小区广场",
        starts_at=clock.now() + dt.timedelta(hours=2), ends_at=clock.now() + dt.timedelta(hours=3, minutes=30),
        capacity=10, half_hours=3, now=clock.now(),
    )
    came = await make_resident(db, "o_came", d.buildings["B1"], phone="13800000021")
    left_early = await make_resident(db, "o_left", d.buildings["B1"], phone="13800000022")
    for person in (came, left_early):
        await act.sign_up(db, activity.id, person, clock.now())
    clock.advance(hours=2)
    await act.check_in(db, came, activity.checkin_code, clock.now())
    await act.check_in(db, left_early, activity.checkin_code, clock.now())
    clock.advance(hours=1, minutes=30)
    await act.check_out(db, came, activity.checkout_code, clock.now())

    results = await asyncio.gather(
        *(act.confirm_attendance(db, actor, activity.id, clock.now(), policy=policy)
          for _ in range(3))
    )

    assert sorted(r.credited for r in results) == [0, 0, 1]
    assert await balance_of(db, came.id) == 18  # 1.5 hours at 12 points an hour
    assert await balance_of(db, left_early.id) == 0
    assert await audit_points(db) == []


async def test_publishing_asks_again_after_a_wrong_answer_and_only_the_community_staff_may_publish_or_confirm(
    db, clock, phone, backend
):
    d, staff = await world(db)
    other = await make_resident(db, "o_other_staff", d.buildings["B4"], phone="13900000019")
    await grant(db, other, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    await make_resident(db, "o_plain", d.buildings["B1"], phone="13800000031")
    assert "仅限" in (await phone.text("o_plain", "发布活动")).text

    await phone.text("o_staff", "发布活动")
    await phone.text("o_staff", "清扫楼道")
    wrong = (await phone.text("o_staff", "明天上午")).text
    assert "没看懂时间" in wrong and "如 11-28 09:00-11:00" in wrong  # the example is tomorrow, never past
    past = (await phone.text("o_staff", "11-27 08:00-09:00")).text
    assert "开始时间须在现在之后" in past
    await phone.text("o_staff", "11-30 14:00-16:30")
    await phone.text("o_staff", "活动室")
    assert "1 到 500" in (await phone.text("o_staff", "几个人")).text
    await phone.text("o_staff", "8")
    assert "半小时" in (await phone.text("o_staff", "1.2")).text
    assert "已退出「志愿活动」" in (await phone.text("o_staff", "取消")).text
    async with db.read() as s:
        assert (await s.exec(select(act.Activity))).all() == []

    activity = await act.publish_activity(
        db, await actor_for(db, staff.id), d.communities["C1"].id, title="义务理发", place="活动室",
        starts_at=clock.now() + dt.timedelta(hours=1), ends_at=clock.now() + dt.timedelta(hours=2),
        capacity=3, half_hours=2, now=clock.now(),
    )
    assert "没有找到这个活动" in (await phone.text("o_other_staff", f"确认时长 {activity.id}")).text
    assert "本社区近期没有志愿活动" in (await phone.text("o_other_staff", "志愿活动")).text


async def test_confirming_hours_with_a_no_show_points_to_making_them_up(db, clock, phone):
    d, _staff = await world(db)
    late = await make_resident(db, "o_late", d.buildings["B1"], name="赵六", phone="13800000002")
    activity_id, _checkin, _checkout = await publish_by_chat(phone, clock)
    await act.sign_up(db, activity_id, late, clock.now())  # signed up, never signed in
    summary = (await phone.text("o_staff", f"确认时长 {activity_id}")).text
    assert "未签到或未签退：1 人" in summary
    assert summary.endswith("目前没有待确认的志愿者。\n确实到场的，可用「补录积分 手机号 小时 理由」补录。")
