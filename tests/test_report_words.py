"""What residents typed while reporting, as they typed it: a complaint with no content, a command before any
description, more words at the photo step (kept, as a voice's words are), and 好的 / 0 for "no photos"."""

from __future__ import annotations

import pytest
from sqlmodel import select

from storage.actor import actor_for
from storage.classifier import default_classifier
from storage.needs import file_on_behalf, find_need, list_needs, resolve_need, triage_need
from storage.outbox import OutboxMessage
from storage.residents import find_resident
from storage.roles import Role
from tests.factories import grant, make_district, make_resident

ATTACH = "如有现场照片（最多9张）、语音或位置，请现在发送。\n发完或没有，请回复「跳过」。"


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    default_classifier().warm_up()


async def test_a_complaint_with_nothing_in_it_is_asked_for_more_and_a_command_is_told_how_to_leave(db, phone):
    d = await make_district(db)
    await make_resident(db, "o_li", d.buildings["B1"], room="301")
    assert (await phone.text("o_li", "反映")).text.startswith("请用一两句话描述")
    for empty in ("我要投诉", "我要反映问题", "投诉一下！"):
        assert (await phone.text("o_li", empty)).text.startswith("再多说几个字吧"), empty
    again = (await phone.text("o_li", "进度")).text
    assert again.startswith("请先描述您要反映的问题。（要发「进度」，请先回复「取消」退出「反映问题」。）")
    assert "吗？\n1. 是" in (await phone.text("o_li", "投诉楼上装修太吵")).text  # content: on to its category


async def test_words_at_the_photo_step_join_the_description_and_a_plain_yes_goes_on(db, phone):
    d = await make_district(db)
    li = await make_resident(db, "o_li", d.buildings["B1"], room="301")
    await phone.text("o_li", "反映 楼道灯坏了，晚上看不见")
    assert (await phone.text("o_li", "1")).text == ATTACH
    added = (await phone.text("o_li", "还有楼下也是")).text
    assert added == "已加到问题描述：「还有楼下也是」\n还可以发送照片、语音或位置；发完请回复「好了」。"
    assert (await phone.text("o_li", "嗯")).text.startswith("请发送照片或位置")  # too short to be a description
    summary = (await phone.text("o_li", "好的")).text
    assert summary.startswith("请确认您要反映的问题") and "楼道灯坏了，晚上看不见（补充）还有楼下也是" in summary
    assert (await phone.text("o_li", "1")).text.startswith("已提交！")
    page = await list_needs(db, follower_id=li.id)
    assert page.needs[0].text == "楼道灯坏了，晚上看不见（补充）还有楼下也是"

    await phone.text("o_li", "反映 单元门禁坏了，门关不上")
    await phone.text("o_li", "1")
    assert (await phone.text("o_li", "0")).text.startswith("请确认您要反映的问题")  # 0 skips, as elsewhere


async def test_a_report_left_half_done_for_30_minutes_says_what_was_not_filed(db, phone, clock):
    d = await make_district(db)
    await make_resident(db, "o_li", d.buildings["B1"], room="301")
    await phone.text("o_li", "反映 楼道灯坏了，晚上看不见")
    await phone.text("o_li", "1")
    clock.advance(minutes=31)
    told = (await phone.text("o_li", "跳过")).text
    assert told.startswith("（您在「反映问题」中停留超过30分钟，已自动退出，问题没有提交：「楼道灯坏了，晚上看不见」。"
                           "回复「反映」可重新提交。）")


async def test_someone_a_leader_filed_for_takes_the_need_over_when_they_bind_with_that_phone(db, phone, clock):
    """代报 for a resident not on file: she bound with the same phone and 进度 said 您还没有反映过问题; every
    notice and the rating request went to the leader, who rated it for her."""
    d = await make_district(db)
    leader = await make_resident(db, "o_leader", d.buildings["B1"], name="周楼长")
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B1"].id)
    need = await file_on_behalf(db, await actor_for(db, leader.id), "下水道堵了，厨房返水", "JZ-05", clock.now(),
                                contact_name="王奶奶", contact_phone="13812345678",
                                building_id=d.buildings["B1"].id, room="601")
    await phone.text("o_wang", "绑定")
    await phone.text("o_wang", "大海阳")
    await phone.text("o_wang", "1")
    await phone.text("o_wang", "601")
    await phone.text("o_wang", "王奶奶")
    await phone.text("o_wang", "13812345678")
    bound = (await phone.text("o_wang", "1")).text
    assert bound.startswith("绑定成功！") and "楼片长代您反映的1条诉求已转到您名下" in bound
    assert (await phone.text("o_wang", "进度")).text.startswith(f"诉求 {need.ticket}\n")
    row = await find_need(db, need.ticket)
    wang = await find_resident(db, "o_wang")
    assert (row.reporter_id, row.filed_by_id, row.rater_id) == (wang.id, leader.id, wang.id)
    # Both hear what happens next; only she is asked to rate.
    staff = await make_resident(db, "o_staff", d.buildings["B2"], name="社工小周")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    await triage_need(db, await actor_for(db, staff.id), need.ticket, "A", clock.now())
    await resolve_need(db, await actor_for(db, staff.id), need.ticket, "已疏通", clock.now())
    async with db.read() as s:
        told = {rid: text for rid, text in (await s.exec(
            select(OutboxMessage.resident_id, OutboxMessage.text).where(OutboxMessage.kind == "need_update")
            .order_by(OutboxMessage.id))).all()}
    assert f"评价 {need.ticket}" in told[wang.id] and f"评价 {need.ticket}" not in told[leader.id]


async def test_the_menu_in_the_middle_of_a_report_says_the_report_was_left(db, phone):
    d = await make_district(db)
    await make_resident(db, "o_li", d.buildings["B1"], room="301")
    await phone.text("o_li", "反映")
    left = (await phone.text("o_li", "你好")).text
    assert left.startswith("（已退出「反映问题」。）\n") and "1. 反映问题" in left
    assert not (await phone.text("o_li", "菜单")).text.startswith("（已退出")  # a menu left open: nothing left


async def test_a_command_typed_with_its_details_is_told_to_come_alone_and_an_offer_lets_commands_through(db, phone):
    """Staff typed 「发布活动 12-01 清扫楼道」 and were offered to 反映 it, then held there: 「待分流」 got
    「请回复 1 或 2」."""
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B2"], name="社工小周")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    assert (await phone.text("o_staff", "发布活动 12-01 清扫楼道")).text == (
        "「发布活动」后面不用带内容：请只回复「发布活动」，再按提示一步步填写。")
    assert (await phone.text("o_staff", "楼道灯坏了好几天没人修")).text.startswith("您是要反映这个问题吗？")
    assert (await phone.text("o_staff", "待分流")).text.startswith("暂无待分流的诉求")  # the offer let it through
