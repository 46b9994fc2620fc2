"""A resident who answers a numbered question with the option's words instead of its number ("确认提交" under
"1. 确认提交", "是" under "1. 是，帮我登记") chose that option; words that fit none, or more than one, get the
question again as before."""

from __future__ import annotations

import pytest

from handlers.framework import chosen_number
from storage.classifier import default_classifier
from storage.needs import list_needs
from tests.factories import make_district, make_resident

CONFIRM = "请确认您要反映的问题：\n内容：楼道灯坏了\n类别：居住环境 · 楼道设施与电梯\n1. 确认提交\n2. 不提交"


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    default_classifier().warm_up()


def test_an_options_words_or_its_head_before_a_comma_name_its_number():
    assert chosen_number(CONFIRM, "确认提交") == "1"
    assert chosen_number(CONFIRM, "不提交") == "2"
    assert chosen_number(CONFIRM, " 确认提交。") == "1"  # typed with a full stop
    offer = "您是要反映这个问题吗？\n1. 是，帮我登记\n2. 不是"
    assert (chosen_number(offer, "是"), chosen_number(offer, "不是"), chosen_number(offer, "是，帮我登记")) == (
        "1", "2", "1")
    staff = "操作：\n1. 通过  2. 退回（写明原因）\n5. 驳回  6. 改类"  # two options on a line
    assert [chosen_number(staff, w) for w in ("通过", "退回", "驳回", "改类")] == ["1", "2", "5", "6"]


def test_a_vague_yes_chooses_nothing():
    # Binding a phone or cancelling a seat is done by the option's number or its own words, never by a bare 好.
    assert [chosen_number(CONFIRM, w) for w in ("是", "好的", "好", "可以", "对")] == [None] * 5
    assert chosen_number("确定取消您的议事座位吗？\n1. 确定取消\n2. 保留预约", "确定取消") == "1"


def test_the_first_words_of_one_option_choose_it():
    # Residents typed 确认 under 「1. 确认提交」 (and the donation's hint itself says 「回复 1 确认」), 确定 under
    # 「1. 确定取消」, 预约 under 「1. 预约座位」: each begins one option only.
    assert chosen_number(CONFIRM, "确认") == "1"
    seat = "确定取消您的议事座位吗？\n1. 确定取消\n2. 保留预约"
    assert (chosen_number(seat, "确定"), chosen_number(seat, "保留")) == ("1", "2")
    menu = "阳光17议\n1. 预约座位\n2. 提议题\n3. 我的预约"
    assert (chosen_number(menu, "预约"), chosen_number(menu, "提议")) == ("1", "2")
    assert chosen_number(menu, "我") is None  # one character begins too much to be a choice
    page = "【志愿积分】余额 0 分\n1. 积分明细\n2. 兑换"
    assert (chosen_number(page, "积分"), chosen_number(page, "积分", begun=False)) == ("1", None)  # a command
    both = "1. 确认修改\n2. 确认删除\n3. 返回"
    assert chosen_number(both, "确认") is None  # the first words of two options


def test_words_that_fit_no_option_or_several_choose_nothing():
    assert chosen_number(CONFIRM, "提交") is None  # part of both options: whole words only
    assert chosen_number(CONFIRM, "1") is None  # already a number
    assert chosen_number(CONFIRM, "内容：楼道灯坏了") is None  # a line of the question, not an option
    assert chosen_number("", "确认提交") is None
    twins = "找到两条：\n1. 附议 楼道灯坏了\n2. 附议 电梯停运"
    assert chosen_number(twins, "附议") is None  # the head of both


async def test_a_report_confirmed_in_words_is_filed_and_one_declined_in_words_is_not(db, phone):
    d = await make_district(db)
    li = await make_resident(db, "o_li", d.buildings["B1"], room="301")

    proposed = (await phone.text("o_li", "反映 楼道灯坏了，晚上看不见")).text
    assert "吗？\n1. 是\n2. 不是，我来选" in proposed
    attach = (await phone.text("o_li", "是")).text  # the proposed sub-item, taken in words
    assert attach.startswith("如有现场照片")
    asked = (await phone.text("o_li", "跳过")).text
    assert asked.startswith("请确认您要反映的问题") and "1. 确认提交" in asked
    filed = (await phone.text("o_li", "确认提交")).text
    assert filed.startswith("已提交！诉求编号：")
    ticket = filed.split("诉求编号：", 1)[1].split("\n", 1)[0]

    await phone.text("o_li", "反映 电梯经常停运，老人上下楼不方便")
    await phone.text("o_li", "1")
    await phone.text("o_li", "跳过")
    unclear = (await phone.text("o_li", "提交")).text  # in both options' words: the question again
    assert unclear.startswith("请回复 1 提交，或 2 不提交。") and "1. 确认提交" in unclear
    declined = (await phone.text("o_li", "不提交")).text
    assert declined.startswith("好的，没有提交")

    page = await list_needs(db, follower_id=li.id)
    assert [n.ticket for n in page.needs] == [ticket]  # the first filed once, the second not at all



async def test_a_command_typed_mid_flow_is_told_how_to_leave_for_it_and_the_question_stands(db, phone):
    d = await make_district(db)
    await make_resident(db, "o_li", d.buildings["B1"], room="301")
    await phone.text("o_li", "反映 楼道灯坏了，晚上看不见")
    again = (await phone.text("o_li", "进度")).text
    assert again.startswith("请回复 1 或 2。（要发「进度」，请先回复「取消」退出「反映问题」。）\n\n")
    assert again.endswith("1. 是\n2. 不是，我来选")  # the same question stands
    assert (await phone.text("o_li", "3")).text.startswith("请回复 1 或 2。\n\n")  # a plain wrong answer: the hint
    assert (await phone.text("o_li", "取消")).text.startswith("已退出「反映问题」")
    assert (await phone.text("o_li", "进度")).text.startswith(("您的诉求", "您还没有"))


async def test_a_number_answered_in_chinese_numerals_typed_or_spoken_chooses_that_option(db, phone, clock):
    d = await make_district(db)
    await make_resident(db, "o_elder", d.buildings["B1"], room="301")
    await phone.text("o_elder", "菜单")
    assert "请用一两句话描述" in (await phone.text("o_elder", "一")).text  # 1. 反映问题
    await phone.text("o_elder", "取消")
    await phone.text("o_elder", "菜单")
    mine = (await phone.voice("o_elder", "二。")).text  # 2. 我的诉求, said aloud
    assert mine == (await phone.text("o_elder", "进度")).text and "没太明白" not in mine
