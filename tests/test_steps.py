"""The shared steps of handlers/steps.py through the gateway: the 大类 → 子项 picker reads the same in every flow
that uses it (resident 反映, leader 代报, staff 改类) and lands on the same sub-item code; a pick-one list."""

from __future__ import annotations

import re

import pytest

from handlers.steps import CATEGORY_HEAD
from storage.classifier import default_classifier
from storage.needs import find_need, report_need
from storage.roles import Role
from tests.factories import grant, make_district, make_resident
from tests.test_needs_guided import number_of


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    default_classifier().warm_up()


async def _walk_the_picker(phone, openid: str, categories: str, heading: str) -> str:
    """Wrong answers, 0 back, then 城市建设 → 供水排水; returns the reply after the sub-item is chosen."""
    assert heading in categories and "1. 居住环境" in categories and "0. 返回大类" not in categories
    wrong = (await phone.text(openid, "12")).text
    lines = len(re.findall(r"(?m)^\d+\. ", categories))  # 8 大类, and 其他/未分类 for residents
    assert wrong == f"请回复 1-{lines} 的数字。\n\n" + categories  # a hint and the same question
    assert (await phone.text(openid, "城建")).text == wrong
    items = (await phone.text(openid, number_of(categories, "城市建设"))).text
    assert items.startswith("「城市建设」下请选择具体问题：\n1. ") and items.endswith("\n0. 返回大类")
    wrong = (await phone.text(openid, "99")).text
    assert wrong.startswith("请回复 1-") and "0 返回大类" in wrong and wrong.endswith("\n\n" + items)
    assert (await phone.text(openid, "0")).text == categories  # back: the 大类 question as first asked
    items = (await phone.text(openid, number_of(categories, "城市建设"))).text
    return (await phone.text(openid, number_of(items, "供水排水"))).text


async def test_a_resident_picks_the_sub_item_with_wrong_answers_and_back(db, phone):
    d = await make_district(db)
    await make_resident(db, "o_res", d.buildings["B1"])
    proposed = (await phone.text("o_res", "反映 楼下的下水井堵了，污水漫到路上")).text
    assert "2. 不是，我来选" in proposed
    categories = (await phone.text("o_res", "2")).text
    assert categories.startswith(CATEGORY_HEAD)
    attach = await _walk_the_picker(phone, "o_res", categories, CATEGORY_HEAD)
    assert "现场照片" in attach
    assert "供水排水" in (await phone.text("o_res", "跳过")).text
    assert "20261127-0001" in (await phone.text("o_res", "1")).text
    assert (await find_need(db, "20261127-0001")).item_code == "CJ-03"


async def test_a_leader_picks_the_same_sub_item_for_a_resident(db, phone):
    d = await make_district(db)
    await make_resident(db, "o_zhao", d.buildings["B1"], room="502", name="赵大妈", phone="13900001111")
    leader = await make_resident(db, "o_leader", d.buildings["B1"], room="101", name="楼长老陈")
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B1"].id)
    await phone.text("o_leader", "代报")
    await phone.text("o_leader", "1号楼 502")
    await phone.text("o_leader", "楼下的下水井堵了，污水漫到路上")
    categories = (await phone.text("o_leader", "2")).text
    confirm = await _walk_the_picker(phone, "o_leader", categories, CATEGORY_HEAD)
    assert "确认代报" in confirm and "供水排水" in confirm
    assert "已代报" in (await phone.text("o_leader", "1")).text
    assert (await find_need(db, "20261127-0001")).item_code == "CJ-03"


async def test_staff_reclassify_uses_the_same_picker_and_cancel_leaves_it(db, phone, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"])
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    need = await report_need(db, resident.id, "楼下的下水井堵了，污水漫到路上", "JZ-05", clock.now())

    categories = (await phone.text("o_staff", f"改类 {need.ticket}")).text
    changed = await _walk_the_picker(phone, "o_staff", categories, "改为哪一大类？")
    assert changed.startswith(f"已将 {need.ticket} 改为「城市建设 · 供水排水」")
    assert (await find_need(db, need.ticket)).item_code == "CJ-03"

    # 取消 leaves the picker at either list, and nothing changes.
    await phone.text("o_staff", f"改类 {need.ticket}")
    assert "已退出「诉求分流」" in (await phone.text("o_staff", "取消")).text
    items_at = (await phone.text("o_staff", f"改类 {need.ticket}")).text
    await phone.text("o_staff", number_of(items_at, "居住环境"))
    assert "已退出「诉求分流」" in (await phone.text("o_staff", "取消")).text
    assert "当前没有进行中的操作" in (await phone.text("o_staff", "取消")).text
    assert (await find_need(db, need.ticket)).item_code == "CJ-03"


async def test_a_resident_cancels_in_the_sub_item_list(db, phone):
    d = await make_district(db)
    await make_resident(db, "o_res", d.buildings["B1"])
    await phone.text("o_res", "反映 楼下的下水井堵了，污水漫到路上")
    categories = (await phone.text("o_res", "2")).text
    await phone.text("o_res", number_of(categories, "城市建设"))
    assert "已退出「反映问题」" in (await phone.text("o_res", "取消")).text
    assert (await find_need(db, "20261127-0001")) is None
