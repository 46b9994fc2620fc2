"""A staff member who serves two communities is asked which one a community's action is for (发布活动, 新建项目,
开启评议 and 结束评议), and the action lands there; one who serves a single community is not asked. 项目 lists
the projects of where they live and of each community they staff."""

from __future__ import annotations

import datetime as dt
import re

from sqlmodel import select

from storage import activities as act
from storage.actor import Actor
from storage.needs import report_need
from storage.projects import Project, create_project, publish_project
from storage.roles import Role
from tests.factories import grant, make_district, make_resident

WHICH = "您在2个社区任职，{question}\n1. 大海阳社区\n2. 南山社区"


async def _staff_of_both(db):
    d = await make_district(db)
    staff = await make_resident(db, "o_both", d.buildings["B1"], name="街道小陈", phone="13900000001")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    return d, staff


async def test_an_activity_is_published_for_the_community_chosen(db, phone):
    d, _staff = await _staff_of_both(db)
    assert (await phone.text("o_both", "发布活动")).text == WHICH.format(question="为哪个社区发布活动？")
    assert (await phone.text("o_both", "3")).text.startswith("请回复 1 或 2。")
    assert "请输入活动名称" in (await phone.text("o_both", "南山社区")).text  # by number or by name
    for text in ["清扫楼道", "11月28日 9:00-11:00", "8号楼楼下", "2", "2"]:
        await phone.text("o_both", text)
    assert "活动编号" in (await phone.text("o_both", "1")).text
    async with db.read() as s:
        [activity] = (await s.exec(select(act.Activity))).all()
    assert activity.community_id == d.communities["C2"].id


async def test_a_project_is_drafted_for_the_community_chosen_and_only_its_needs_link(db, phone, clock):
    d, _staff = await _staff_of_both(db)
    south = await make_resident(db, "o_south", d.buildings["B4"], room="502")
    need = await report_need(db, south.id, "8号楼楼道灯全坏了", "JZ-05", clock.now())
    assert (await phone.text("o_both", "新建项目")).text == WHICH.format(question="为哪个社区新建项目？")
    assert "第1/5步" in (await phone.text("o_both", "2")).text
    for answer in (need.ticket, "楼道照明改造", "为8号楼更换楼道灯", "采购LED声控灯并安装", "12-31"):
        await phone.text("o_both", answer)
    reply = (await phone.text("o_both", "1")).text
    number = int(re.search(r"编号 (\d+)", reply).group(1))
    async with db.read() as s:
        project = await s.get(Project, number)
    assert project.community_id == d.communities["C2"].id

    # Chosen the other community, the same need is not one of its own: refused at once, with the reason.
    await phone.text("o_both", "新建项目")
    await phone.text("o_both", "1")
    assert (await phone.text("o_both", need.ticket)).text.startswith(f"没有找到本社区编号为 {need.ticket} 的诉求")


async def test_the_review_is_opened_and_closed_for_the_community_chosen(db, phone):
    await _staff_of_both(db)
    asked = (await phone.text("o_both", "开启评议 7")).text
    assert asked == WHICH.format(question="开启哪个社区的项目评议？")
    assert (await phone.text("o_both", "2")).text == "南山社区2026年还没有已完成的服务项目，无需评议。"
    assert (await phone.text("o_both", "结束评议")).text == WHICH.format(question="结束哪个社区的项目评议？")
    assert (await phone.text("o_both", "1")).text == "本社区没有评议。"
    assert (await phone.text("o_both", "1")).text != "本社区没有评议。"  # the list closed with the answer


async def test_staff_of_one_community_are_not_asked(db, phone):
    d = await make_district(db)
    staff = await make_resident(db, "o_one", d.buildings["B1"], name="社工小李")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    assert "请输入活动名称" in (await phone.text("o_one", "发布活动")).text
    await phone.text("o_one", "取消")
    assert "第1/5步" in (await phone.text("o_one", "新建项目")).text


async def test_项目_lists_each_community_they_staff_with_its_drafts_and_shows_their_cards(db, phone, clock):
    d, _staff = await _staff_of_both(db)
    neighbour = await make_resident(db, "o_neighbour", d.buildings["B1"])  # lives in 大海阳社区, staffs nothing
    made = {}
    for code, building, title in (("C1", "B1", "北区照明改造"), ("C2", "B4", "南山健身器材")):
        reporter = await make_resident(db, f"o_rep_{code}", d.buildings[building])
        need = await report_need(db, reporter.id, f"{title}的问题", "JZ-05", clock.now())
        made[code] = await create_project(db, community_id=d.communities[code].id, title=title, content="内容",
                                          measures="措施", deadline=dt.date(2026, 12, 31), actor=Actor.operator("t"),
                                          now=clock.now(), need_tickets=[need.ticket])
    await publish_project(db, made["C1"].id, actor=Actor.operator("t"), now=clock.now())  # C2's stays a draft

    listing = (await phone.text("o_both", "项目")).text
    assert listing.startswith("您所在和负责的2个社区的服务项目（共2个）")
    assert f"【{made['C1'].id}】北区照明改造（待接单·大海阳社区）" in listing
    assert f"【{made['C2'].id}】南山健身器材（待发布·南山社区）" in listing
    assert "南山健身器材" in (await phone.text("o_both", f"项目 {made['C2'].id}")).text  # a card of theirs

    # A resident of 大海阳社区 sees their own community's published projects only, as before.
    listing = (await phone.text("o_neighbour", "项目")).text
    assert listing.startswith("本社区服务项目（共1个）") and "南山" not in listing
    assert "没有找到" in (await phone.text("o_neighbour", f"项目 {made['C2'].id}")).text
    # Under the list, the bare 【编号】 opens the card (residents typed 1, as under every list), and the list stays
    # open for another; a word is a fresh message.
    await phone.text("o_neighbour", "项目")
    assert "北区照明改造" in (await phone.text("o_neighbour", str(made["C1"].id))).text
    assert "没有找到" in (await phone.text("o_neighbour", str(made["C2"].id))).text
    assert (await phone.text("o_neighbour", "取消")).text == "已退出「服务项目」。回复「菜单」查看全部服务。"
    assert neighbour.community_id == d.communities["C1"].id
