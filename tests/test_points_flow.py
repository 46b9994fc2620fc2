"""志愿积分 through the gateway: see points, redeem, pick up by code, cancel and refund, donate, staff credit."""

from __future__ import annotations

import asyncio
import re

from sqlmodel import select

from storage import rewards as rw
from storage.actor import actor_for
from storage.points import PointsPolicy, audit_points, balance_of, credit_service, fund_balance, share_code_of
from storage.roles import AuditLog, Role
from tests.factories import grant, make_district, make_resident


async def world(db, clock):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B2"], name="李社工", phone="13900000009")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    actor = await actor_for(db, staff.id)
    c1 = d.communities["C1"].id
    rice = await rw.add_reward(db, actor, c1, "大米一袋", 50, 3, clock.now())
    haircut = await rw.add_reward(db, actor, c1, "上门理发", 80, 2, clock.now(), kind=rw.RewardKind.SERVICE)
    return d, staff, rice, haircut


async def earn(db, resident, points, clock, key):
    async with db.write() as s:
        await credit_service(s, resident.id, points // 5, reason="志愿活动「清扫楼道」", reference="activity:1",
                             actor="resident:1", now=clock.now(), key=key, policy=PointsPolicy())


async def test_resident_redeems_rice_and_staff_hand_it_over_by_pickup_code(db, clock, phone, backend):
    d, _staff, _rice, _haircut = await world(db, clock)
    me = await make_resident(db, "o_me", d.buildings["B1"], name="王芳", phone="13800000001")
    await earn(db, me, 60, clock, "seed")

    menu = (await phone.click("o_me", "POINTS")).text
    assert "余额 60 分" in menu and "2. 兑换礼品" in menu
    catalogue = (await phone.text("o_me", "2")).text
    assert "1. 大米一袋 50分 剩3 ✓" in catalogue and "2. 上门理发 80分 名额2" in catalogue
    assert "✓" not in catalogue.splitlines()[2]
    assert "积分不足" in (await phone.text("o_me", "2")).text  # the same question again
    confirm = (await phone.text("o_me", "1")).text
    assert "需 50 分，兑换后余额 10 分" in confirm
    done = (await phone.text("o_me", "1")).text
    code = re.search(r"取货码：(\w+)", done).group(1)
    assert done.startswith("兑换成功") and "剩余积分 10 分" in done and len(code) == 6
    assert not set(code) & set("01OIL")

    handed = (await phone.text("o_staff", f"核销 {code.lower()}")).text
    assert "核销成功" in handed and "王*" in handed and "138****0001" in handed and "13800000001" not in handed
    assert "不能再核销" in (await phone.text("o_staff", f"核销 {code}")).text
    mine = (await phone.text("o_me", "我的兑换")).text
    assert "大米一袋" in mine and "已领取" in mine
    async with db.read() as s:
        actions = (await s.exec(select(AuditLog.action))).all()
    assert "redemption.fulfil" in actions
    assert await audit_points(db) == []


async def test_resident_cancels_before_pickup_and_gets_points_and_stock_back(db, clock, phone, backend):
    d, _staff, rice, _haircut = await world(db, clock)
    me = await make_resident(db, "o_me", d.buildings["B1"], phone="13800000001")
    await earn(db, me, 50, clock, "seed")
    await phone.text("o_me", "兑换")
    await phone.text("o_me", "1")
    await phone.text("o_me", "1")
    assert await balance_of(db, me.id) == 0

    mine = (await phone.text("o_me", "我的兑换")).text
    assert "1. 大米一袋" in mine and "待领取" in mine
    assert "确定取消" in (await phone.text("o_me", "1")).text
    kept = (await phone.text("o_me", "取消")).text
    assert kept == "已退出，这次兑换仍然保留。如要取消，请在「我的兑换」里选它，再回复 1。"
    assert await balance_of(db, me.id) == 0
    await phone.text("o_me", "我的兑换")
    assert "确定取消" in (await phone.text("o_me", "1")).text
    cancelled = (await phone.text("o_me", "1")).text
    assert "50 分已退回，当前余额 50 分" in cancelled
    assert [r.stock for r in await rw.catalogue(db, rice.community_id) if r.id == rice.id] == [3]
    details = (await phone.text("o_me", "积分明细")).text
    assert "+50 取消兑换「大米一袋」" in details and "-50 兑换「大米一袋」" in details
    assert await audit_points(db) == []


async def test_double_taps_on_confirm_through_the_gateway_redeem_once(db, clock, phone, backend):
    d, _staff, rice, _haircut = await world(db, clock)
    me = await make_resident(db, "o_me", d.buildings["B1"], phone="13800000001")
    await earn(db, me, 200, clock, "seed")
    await phone.text("o_me", "兑换")
    await phone.text("o_me", "1")

    replies = await asyncio.gather(*(phone.text("o_me", "1") for _ in range(5)))
    retried = await asyncio.gather(*(phone.text("o_me", "1", msg_id=777001) for _ in range(3)))

    assert sum("兑换成功" in r.text for r in replies) == 1
    assert len({r.text for r in retried}) == 1  # WeChat's retries of one message get one answer
    assert await balance_of(db, me.id) == 150
    assert [r.stock for r in await rw.catalogue(db, rice.community_id) if r.id == rice.id] == [2]


async def test_ten_residents_confirming_at_once_through_the_gateway_share_three_bags(db, clock, phone, backend):
    d, _staff, _rice, _haircut = await world(db, clock)
    people = [await make_resident(db, f"o_r{i}", d.buildings["B1"], phone=f"1380000{i:04d}") for i in range(10)]
    for p in people:
        await earn(db, p, 50, clock, f"seed:{p.id}")
    for p in people:
        await phone.text(p.openid, "兑换")
        await phone.text(p.openid, "1")

    replies = await asyncio.gather(*(phone.text(p.openid, "1") for p in people))

    assert sum("兑换成功" in r.text for r in replies) == 3
    assert sum("已经兑完了" in r.text for r in replies) == 7
    assert sorted([await balance_of(db, p.id) for p in people]) == [0, 0, 0] + [50] * 7
    assert await audit_points(db) == []


async def test_resident_donates_to_the_community_fund_and_to_a_neighbour_with_confirmation(db, clock, phone, backend):
    d, _staff, _rice, _haircut = await world(db, clock)
    me = await make_resident(db, "o_me", d.buildings["B1"], phone="13800000001")
    neighbour = await make_resident(db, "o_nb", d.buildings["B3"], name="赵大爷", phone="13800000002")
    far = await make_resident(db, "o_far", d.buildings["B4"], phone="13800000003")  # another community
    # Nothing to give: said at once, not after asking who and how much (every amount but 0 was "too much").
    assert (await phone.text("o_me", "捐赠积分")).text == (
        "您的积分余额为 0 分，暂时不能捐赠。参加志愿活动可以获得积分，回复「志愿活动」查看。")
    await earn(db, me, 150, clock, "seed")

    await phone.text("o_me", "捐赠积分")
    await phone.text("o_me", "1")
    too_much = (await phone.text("o_me", "500")).text
    assert too_much.startswith("您的余额是 150 分，请输入不超过余额的数，或回复「取消」。")
    confirm = (await phone.text("o_me", "30")).text
    assert "30 积分捐给社区公益基金" in confirm
    assert "已捐出 30 积分，当前余额 120 分" in (await phone.text("o_me", "1")).text

    await phone.text("o_me", "捐赠积分")
    await phone.text("o_me", "2")
    assert "积分码是6位" in (await phone.text("o_me", "13800000002")).text  # a phone number names nobody
    far_code = await share_code_of(db, far.id, clock.now())
    assert "没有找到这个积分码" in (await phone.text("o_me", far_code)).text  # another community's
    code = await share_code_of(db, neighbour.id, clock.now())
    found = (await phone.text("o_me", code.lower())).text
    assert f"积分码 {code} 有效" in found and "赵" not in found and "138****0002" not in found
    assert f"捐给积分码 {code} 的居民" in (await phone.text("o_me", "40")).text
    assert "已捐出 40 积分" in (await phone.text("o_me", "1")).text

    await phone.text("o_me", "捐赠积分")
    await phone.text("o_me", "1")
    await phone.text("o_me", "40")
    assert "今天还可捐 30 分" in (await phone.text("o_me", "1")).text  # the daily cap (100)
    assert await fund_balance(db, d.communities["C1"].id) == 30
    assert await balance_of(db, neighbour.id) == 40
    assert await balance_of(db, me.id) == 80
    assert await audit_points(db) == []


async def test_staff_credit_hours_outside_an_activity_with_a_reason_and_it_is_audited(db, clock, phone, backend):
    d, staff, _rice, _haircut = await world(db, clock)
    await make_resident(db, "o_me", d.buildings["B1"], name="王芳", phone="13800000001")

    usage = (await phone.text("o_staff", "补录积分 13800000001")).text
    assert "格式" in usage
    ask = (await phone.text("o_staff", "补录积分 13800000001 1.5 协助独居老人就医")).text
    assert "王*" in ask and "1.5 小时" in ask and "15 积分" in ask and "13800000001" not in ask
    assert "已补录 1.5 小时，积分 +15" in (await phone.text("o_staff", "1")).text
    assert "仅限" in (await phone.text("o_me", "补录积分 13800000001 2 自己给自己")).text

    points = (await phone.text("o_me", "积分")).text
    assert "余额 15 分" in points and "今年服务 1.5 小时" in points
    async with db.read() as s:
        audit = (await s.exec(select(AuditLog).where(AuditLog.action == "points.award"))).all()
    assert len(audit) == 1 and audit[0].actor == f"resident:{staff.id}" and "协助独居老人就医" in audit[0].detail
    assert await audit_points(db) == []


async def test_staff_of_another_community_cannot_fulfil_a_code(db, clock, phone, backend):
    d, _staff, rice, _haircut = await world(db, clock)
    other = await make_resident(db, "o_other", d.buildings["B4"], phone="13900000019")
    await grant(db, other, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    me = await make_resident(db, "o_me", d.buildings["B1"], phone="13800000001")
    await earn(db, me, 50, clock, "seed")
    done = await rw.redeem(db, me, rice.id, "k", clock.now())

    assert "没有找到这个取货码" in (await phone.text("o_other", f"核销 {done.redemption.pickup_code}")).text
    assert "取货码是6位" in (await phone.text("o_staff", "核销")).text + (await phone.text("o_staff", "x")).text


async def test_empty_catalogue_and_no_history_read_kindly(db, clock, phone, backend):
    d = await make_district(db)
    await make_resident(db, "o_new", d.buildings["B4"], phone="13800000005")
    assert "本社区暂未上架兑换项目" in (await phone.text("o_new", "兑换")).text
    summary = (await phone.text("o_new", "积分")).text
    assert "余额 0 分" in summary and "参加志愿活动" in summary
    assert "还没有积分记录" in (await phone.text("o_new", "积分明细")).text
    assert "还没有兑换记录" in (await phone.text("o_new", "我的兑换")).text


def test_a_points_line_cut_short_says_so():
    import datetime as dt
    from types import SimpleNamespace
    from zoneinfo import ZoneInfo

    from handlers.points import entry_line

    at = dt.datetime(2026, 12, 6, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    long = SimpleNamespace(created_at=at, amount=40, reason="补录：演示：此前参加社区志愿服务的时长")
    assert entry_line(long) == "12-06 +40 补录：演示：此前参加社区志愿服…"
    short = SimpleNamespace(created_at=at, amount=-50, reason="兑换「大米一袋」")
    assert entry_line(short) == "12-06 -50 兑换「大米一袋」"


async def test_points_history_pages_on_by_the_word_every_list_takes(db, clock, phone):
    d, _staff, _rice, _haircut = await world(db, clock)
    me = await make_resident(db, "o_me", d.buildings["B1"], phone="13800000001")
    for i in range(10):  # one page is 8 lines
        await earn(db, me, 5, clock, f"seed:{i}")
    first = (await phone.text("o_me", "积分明细")).text
    assert first.startswith("【积分明细】第1页") and first.endswith("回复「下一页」继续看。回复「取消」结束。")
    second = (await phone.text("o_me", "下一页")).text
    assert second.startswith("【积分明细】第2页") and second.endswith("（已是最后一页）")
    assert (await phone.text("o_me", "积分明细")).text == first
    assert (await phone.text("o_me", "1")).text == second  # what the page offered before still works
    assert (await phone.text("o_me", "下一页")).text == "已经是最后一页了。回复「菜单」查看全部服务。"


async def test_a_mistyped_pickup_code_is_asked_for_again_and_the_right_one_then_fulfils(db, clock, phone):
    d, _staff, rice, _haircut = await world(db, clock)
    me = await make_resident(db, "o_me", d.buildings["B1"], phone="13800000001")
    await earn(db, me, 60, clock, "seed")
    await phone.text("o_me", "兑换")
    await phone.text("o_me", "1")
    code = re.search(r"取货码[：:]\s*(\w+)", (await phone.text("o_me", "1")).text).group(1)
    assert (await phone.text("o_staff", "核销")).text == "请输入居民出示的取货码："
    wrong = (await phone.text("o_staff", "ZZZZ99")).text
    assert wrong == "没有找到这个取货码，请核对后重试。\n\n请输入居民出示的取货码："
    # The command retyped at the question (「核销 q3pvvh」) is that code, not an unknown one.
    assert (await phone.text("o_staff", f"核销 {code.lower()}")).text.startswith(f"核销成功：「{rice.name}」")
    # A code already picked up is an answer, not a typo: the flow ends with it.
    await phone.text("o_staff", "核销")
    assert "不能再核销" in (await phone.text("o_staff", code)).text
    assert (await phone.text("o_staff", "取消")).text.startswith("当前没有进行中的操作")
