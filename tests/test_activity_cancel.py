"""Staff call things off through the gateway: a whole volunteer activity (取消活动) and a redemption (取消兑换)."""

from __future__ import annotations

import datetime as dt
import re

from sqlmodel import select

from storage import activities as act
from storage import rewards as rw
from storage.actor import actor_for
from storage.outbox import OutboxMessage
from storage.points import PointsPolicy, audit_points, balance_of, credit_service
from storage.roles import AuditLog, Role
from tests.factories import grant, make_district, make_resident

TZ = dt.timezone(dt.timedelta(hours=8))


async def world(db):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B2"], name="李社工", phone="13900000009")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    other = await make_resident(db, "o_other_staff", d.buildings["B4"], name="赵社工", phone="13900000019")
    await grant(db, other, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    return d, staff


async def publish(db, d, staff, clock, *, capacity: int = 2, title: str = "清扫楼道") -> act.Activity:
    return await act.publish_activity(
        db, await actor_for(db, staff.id), d.communities["C1"].id, title=title,
        place="1号楼楼下", starts_at=dt.datetime(2026, 11, 28, 9, 0, tzinfo=TZ),
        ends_at=dt.datetime(2026, 11, 28, 11, 0, tzinfo=TZ), capacity=capacity, half_hours=4, now=clock.now(),
    )


async def sign_up_by_chat(phone, openid: str) -> str:
    await phone.text(openid, "志愿活动")
    await phone.text(openid, "1")
    return (await phone.text(openid, "1")).text


async def notices_with(db, key_prefix: str) -> list[OutboxMessage]:
    async with db.read() as s:
        rows = await s.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key.startswith(key_prefix)))
        return list(rows.all())


async def audit_actions(db, action: str) -> list[AuditLog]:
    async with db.read() as s:
        return list((await s.exec(select(AuditLog).where(AuditLog.action == action))).all())


# ---------------------------------------------------------------------------------------------- activities


async def test_staff_cancel_an_activity_and_every_signed_up_and_waitlisted_resident_is_told_once(
    db, clock, phone, backend
):
    d, staff = await world(db)
    activity = await publish(db, d, staff, clock, capacity=2)
    people = [
        await make_resident(db, f"o_vol{i}", d.buildings["B1"], name=f"居民{i}", phone=f"1380000000{i}")
        for i in range(1, 5)
    ]
    assert "报名成功" in await sign_up_by_chat(phone, "o_vol1")
    assert "报名成功" in await sign_up_by_chat(phone, "o_vol2")
    assert "候补第1位" in await sign_up_by_chat(phone, "o_vol3")
    await phone.text("o_vol4", "志愿活动")
    assert "1. 报名参加" in (await phone.text("o_vol4", "1")).text  # looking at it, not yet signed up

    asked = (await phone.text("o_staff", f"取消活动 {activity.id}")).text
    assert "请说明原因" in asked
    assert "请写明取消原因" in (await phone.text("o_staff", "雨")).text
    # The command retyped (取消活动 2 天气原因) is not a reason: asked again, with the way out.
    assert "请写明取消原因" in (await phone.text("o_staff", f"取消活动 {activity.id} 天气原因")).text
    preview = (await phone.text("o_staff", "暴雨预警")).text
    assert "「清扫楼道」" in preview and "已报名 2 人、候补 1 人" in preview and "1. 确认取消" in preview
    assert "照常进行" in (await phone.text("o_staff", "2")).text
    assert await notices_with(db, f"activity:{activity.id}:cancelled") == []

    preview = (await phone.text("o_staff", f"取消活动 {activity.id} 暴雨预警，改期另行通知")).text
    assert "原因：暴雨预警，改期另行通知" in preview
    assert "请回复 1 确认取消" in (await phone.text("o_staff", "好")).text  # the same question again
    done = (await phone.text("o_staff", "1")).text
    assert "已取消" in done and "已通知 3 位" in done

    notices = await notices_with(db, f"activity:{activity.id}:cancelled")
    assert sorted(n.resident_id for n in notices) == sorted(p.id for p in people[:3])
    assert all("「清扫楼道」" in n.text and "原因：暴雨预警，改期另行通知" in n.text for n in notices)
    audits = await audit_actions(db, "activity.cancel")
    assert [a.target_id for a in audits] == [str(activity.id)] and "暴雨预警" in audits[0].detail
    assert audits[0].actor == f"resident:{staff.id}"

    assert "本社区近期没有志愿活动" in (await phone.text("o_vol1", "志愿活动")).text
    assert "已取消" in (await phone.text("o_vol4", "1")).text  # the sign-up they were about to make is refused
    assert [p.resident.id for p in await act.attendance(db, activity.id) if p.resident.id == people[3].id] == []
    clock.set(dt.datetime(2026, 11, 28, 8, 50, tzinfo=TZ))
    assert "已取消，不能签到" in (await phone.text("o_vol1", f"签到 {activity.checkin_code}")).text

    again = (await phone.text("o_staff", f"取消活动 {activity.id} 再取消一次")).text
    assert "已经取消过了" in again
    assert len(await notices_with(db, f"activity:{activity.id}:cancelled")) == 3
    assert len(await audit_actions(db, "activity.cancel")) == 1


async def test_only_staff_of_the_activity_s_own_community_may_cancel_it(db, clock, phone, backend):
    d, staff = await world(db)
    activity = await publish(db, d, staff, clock)
    await make_resident(db, "o_vol1", d.buildings["B1"], phone="13800000001")
    assert "报名成功" in await sign_up_by_chat(phone, "o_vol1")

    elsewhere = (await phone.text("o_other_staff", f"取消活动 {activity.id} 人手不够")).text
    assert "没有找到这个活动" in elsewhere
    resident = (await phone.text("o_vol1", f"取消活动 {activity.id} 不想去了")).text
    assert "仅限" in resident
    assert "格式：取消活动 活动编号 理由" in (await phone.text("o_staff", "取消活动 清扫楼道")).text

    assert (await act.get_activity(db, activity.id)).status == act.ActivityStatus.OPEN
    assert "清扫楼道" in (await phone.text("o_vol1", "志愿活动")).text
    assert await notices_with(db, f"activity:{activity.id}:cancelled") == []
    assert await audit_actions(db, "activity.cancel") == []


async def test_an_activity_that_has_started_or_whose_hours_were_confirmed_cannot_be_cancelled(
    db, clock, phone, backend
):
    d, staff = await world(db)
    activity = await publish(db, d, staff, clock)
    volunteer = await make_resident(db, "o_vol1", d.buildings["B1"], phone="13800000001")
    assert "报名成功" in await sign_up_by_chat(phone, "o_vol1")

    clock.set(dt.datetime(2026, 11, 28, 9, 0, tzinfo=TZ))
    assert "签到成功" in (await phone.text("o_vol1", f"签到 {activity.checkin_code}")).text
    assert "已经开始，不能取消" in (await phone.text("o_staff", f"取消活动 {activity.id} 临时有事")).text
    clock.set(dt.datetime(2026, 11, 28, 11, 0, tzinfo=TZ))
    assert "签退成功" in (await phone.text("o_vol1", f"签退 {activity.checkout_code}")).text
    await phone.text("o_staff", f"确认时长 {activity.id}")
    assert "已确认 1 人" in (await phone.text("o_staff", "1")).text

    refused = (await phone.text("o_staff", f"取消活动 {activity.id} 弄错了")).text
    assert "已确认过志愿者的服务时长，不能取消" in refused
    try:
        await act.cancel_activity(db, await actor_for(db, staff.id), activity.id, "绕过聊天直接取消", clock.now())
    except act.PointsRefused as exc:
        assert "不能取消" in exc.reason
    else:
        raise AssertionError("cancelling a confirmed activity must be refused")
    assert (await act.get_activity(db, activity.id)).status == act.ActivityStatus.OPEN
    assert await balance_of(db, volunteer.id) == 20
    assert await audit_actions(db, "activity.cancel") == []


# ---------------------------------------------------------------------------------------------- redemptions


async def redeem_rice(db, d, staff, me, phone, clock) -> tuple[rw.Reward, str]:
    rice = await rw.add_reward(db, await actor_for(db, staff.id), d.communities["C1"].id, "大米一袋", 50, 3,
                               clock.now())
    async with db.write() as s:
        await credit_service(s, me.id, 12, reason="志愿活动「清扫楼道」", reference="activity:1", actor="resident:1",
                             now=clock.now(), key="seed", policy=PointsPolicy())
    await phone.text("o_me", "兑换")
    await phone.text("o_me", "1")
    done = (await phone.text("o_me", "1")).text
    return rice, re.search(r"取货码：(\w+)", done).group(1)


async def stock_of(db, reward_id: int) -> int:
    async with db.read() as s:
        return (await s.get(rw.Reward, reward_id)).stock


async def test_staff_cancel_a_redemption_by_code_and_the_resident_is_refunded_and_told_once(
    db, clock, phone, backend
):
    d, staff = await world(db)
    me = await make_resident(db, "o_me", d.buildings["B1"], name="王芳", phone="13800000001")
    rice, code = await redeem_rice(db, d, staff, me, phone, clock)
    assert await balance_of(db, me.id) == 10 and await stock_of(db, rice.id) == 2

    assert "仅限" in (await phone.text("o_me", f"取消兑换 {code} 不要了")).text
    assert "没有找到这个取货码" in (await phone.text("o_other_staff", f"取消兑换 {code} 库存错误")).text
    asked = (await phone.text("o_staff", f"取消兑换 {code.lower()}")).text
    assert "请说明原因" in asked
    # The command retyped is no reason the resident should be sent.
    assert (await phone.text("o_staff", "取消兑换")).text.startswith("请写明取消原因")
    preview = (await phone.text("o_staff", "大米受潮，无法发放")).text
    assert "「大米一袋」" in preview and "王*" in preview and "138****0001" in preview and "13800000001" not in preview
    assert "50 积分将退回" in preview and "1. 确认取消" in preview
    done = (await phone.text("o_staff", "1")).text
    assert "已取消「大米一袋」的兑换" in done and "50 积分已退回" in done

    assert await balance_of(db, me.id) == 60
    assert await stock_of(db, rice.id) == 3
    async with db.read() as s:
        told = (await s.exec(select(OutboxMessage).where(
            OutboxMessage.resident_id == me.id, OutboxMessage.text.contains("已由社区取消")))).all()
    assert len(told) == 1 and "原因：大米受潮，无法发放" in told[0].text and "50 积分已退回" in told[0].text
    audits = await audit_actions(db, "redemption.cancel")
    assert len(audits) == 1 and "大米受潮" in audits[0].detail and audits[0].actor == f"resident:{staff.id}"

    again = (await phone.text("o_staff", f"取消兑换 {code} 再试一次")).text
    assert "已取消，不能再取消" in again
    assert "已取消" in (await phone.text("o_me", "我的兑换")).text
    assert await balance_of(db, me.id) == 60 and await stock_of(db, rice.id) == 3
    assert len(await audit_actions(db, "redemption.cancel")) == 1
    assert await audit_points(db) == []


async def test_a_redemption_already_picked_up_cannot_be_cancelled_and_the_staff_may_change_their_mind(
    db, clock, phone, backend
):
    d, staff = await world(db)
    me = await make_resident(db, "o_me", d.buildings["B1"], name="王芳", phone="13800000001")
    rice, code = await redeem_rice(db, d, staff, me, phone, clock)

    await phone.text("o_staff", f"取消兑换 {code} 库存盘点有误")
    assert "兑换保留" in (await phone.text("o_staff", "2")).text
    assert await balance_of(db, me.id) == 10

    preview = (await phone.text("o_staff", f"取消兑换 {code} 库存盘点有误")).text
    assert "1. 确认取消" in preview
    handed = await rw.fulfil_by_code(db, await actor_for(db, staff.id), code, clock.now())
    assert handed.redemption.status == rw.RedemptionStatus.FULFILLED  # picked up at the desk meanwhile
    assert "已领取，不能再取消" in (await phone.text("o_staff", "1")).text
    late = (await phone.text("o_staff", f"取消兑换 {code} 库存盘点有误")).text
    assert "已领取，不能再取消" in late
    assert "格式：取消兑换 取货码 理由" in (await phone.text("o_staff", "取消兑换")).text
    assert await balance_of(db, me.id) == 10 and await stock_of(db, rice.id) == 2
    assert await audit_actions(db, "redemption.cancel") == []
