"""Binding a resident to their home, through the gateway as their phone would, and changing it later."""

from __future__ import annotations

import pytest
from sqlmodel import select

from bot.simulator import Phone
from handlers import ROUTERS
from handlers.framework import Context, Engine, Router
from storage.actor import Actor
from storage.imports import import_org, import_residents
from storage.residents import Resident, RosterEntry, find_resident
from tests.factories import make_district, make_resident


@pytest.fixture
async def district(db):
    return await make_district(db)


@pytest.fixture
async def say(phone):
    async def send(openid: str, text: str) -> str:
        answer = await phone.text(openid, text)
        assert answer.status == 200
        return answer.text

    return send


async def test_new_follower_binds_by_searching_the_community_and_sees_the_phone_masked(phone, say, district, db):
    welcome = await phone.follow("o_li")
    assert "欢迎关注" in welcome.text and "回复 1 立即绑定" in welcome.text
    assert "社区的名称" in await say("o_li", "1")
    buildings = await say("o_li", "大海")  # one match: 大海阳社区, straight to its buildings
    assert buildings.startswith("大海阳社区：请选择您的楼栋")
    assert "1. 1号楼" in buildings and "3. 3号楼" in buildings and "8号楼" not in buildings  # 8号楼 is in C2
    assert "房号" in await say("o_li", "2")
    wrong_room = await say("o_li", "楼上那家")
    assert wrong_room.startswith("房号格式不对") and wrong_room.endswith("301）：")
    assert await say("o_li", "2单元301室") == "请输入您的姓名："
    assert "姓名" in await say("o_li", "12345")
    assert "手机号" in await say("o_li", "李 秀 英")
    wrong_phone = await say("o_li", "12345678901")
    assert wrong_phone.startswith("手机号格式不对")
    confirm = await say("o_li", "138 0013 8000")
    assert "138****8000" in confirm and "13800138000" not in confirm
    assert "楼栋：2号楼" in confirm and "房号：2单元301" in confirm and "1. 确认" in confirm
    assert await find_resident(db, "o_li") is not None and not (await find_resident(db, "o_li")).is_bound
    assert "请回复 1 确认" in await say("o_li", "好的")
    done = await say("o_li", "1")
    assert done.startswith("绑定成功！大海阳社区 2号楼 2单元301")
    row = await find_resident(db, "o_li")
    assert row.is_bound
    assert (row.building_id, row.community_id) == (district.buildings["B2"].id, district.communities["C1"].id)
    assert (row.room, row.name, row.phone) == ("2单元301", "李 秀 英", "13800138000")
    assert row.subscribed and row.notify_consultation


async def test_follower_who_scans_a_buildings_qr_code_is_asked_only_room_name_and_phone(phone, say, district, db):
    welcome = await phone.follow("o_qr", scene="B4")
    assert "您扫描的是 南山社区 8号楼" in welcome.text and welcome.text.endswith("301）：")
    assert await say("o_qr", "1-2-301") == "请输入您的姓名："
    await say("o_qr", "王芳")
    confirm = await say("o_qr", "13912345678")
    assert "社区：南山社区" in confirm and "楼栋：8号楼" in confirm and "139****5678" in confirm
    assert "重新填写" in confirm
    again = await say("o_qr", "2")  # 重新填写 keeps the scanned building
    assert again.endswith("301）：")
    await say("o_qr", "1-2-302")
    await say("o_qr", "王芳")
    await say("o_qr", "13912345678")
    assert (await say("o_qr", "1")).startswith("绑定成功！南山社区 8号楼 1-2-302")
    row = await find_resident(db, "o_qr")
    assert row.room == "1-2-302"
    assert (row.building_id, row.community_id) == (district.buildings["B4"].id, district.communities["C2"].id)


async def test_an_unknown_qr_scene_falls_back_to_the_ordinary_offer(phone, district):
    welcome = await phone.follow("o_odd", scene="NOPE")
    assert "回复 1 立即绑定" in welcome.text and "您扫描的是" not in welcome.text


async def test_cancelling_halfway_stores_nothing(phone, say, district, db):
    await phone.follow("o_quit", scene="B1")
    await say("o_quit", "301")
    await say("o_quit", "赵六")
    left = await say("o_quit", "取消")
    assert left.startswith("已退出「绑定住址」")
    row = await find_resident(db, "o_quit")
    assert not row.is_bound and row.room is None and row.name is None and row.phone is None
    assert "没太明白" in await say("o_quit", "13800138000")  # the flow is really gone


async def test_several_communities_match_and_a_long_list_of_buildings_is_paged(say, district, db, clock):
    rows = ["street_code,street_name,community_code,community_name,grid_code,grid_name,building_code,building_name"]
    rows += [f"S1,向阳街道,C5,大海东社区,G5,东网格,B5{n:02d},{n}号楼" for n in range(1, 11)]
    assert (await import_org(db, "\n".join(rows), Actor.operator("test"), clock.now())).ok
    await say("o_many", "绑定")
    choices = await say("o_many", "大海")
    assert "1. 大海阳社区" in choices and "2. 大海东社区" in choices
    assert "请回复列表中的数字" in await say("o_many", "7")
    first = await say("o_many", "2")
    assert "1. 1号楼" in first and "8. 8号楼" in first and "9号楼" not in first and "0. 下一页（第1/2页）" in first
    second = await say("o_many", "0")
    assert "1. 9号楼" in second and "2. 10号楼" in second and "第2/2页" in second
    assert "房号" in await say("o_many", "2")
    await say("o_many", "101")
    await say("o_many", "孙七")
    await say("o_many", "15000000000")
    assert (await say("o_many", "1")).startswith("绑定成功！大海东社区 10号楼 101")


async def test_a_community_that_is_not_found_is_asked_again(say, district):
    await say("o_typo", "绑定")
    reply = await say("o_typo", "火星")
    assert reply.startswith("没有找到名称含“火星”的社区") and "回复「街道」按街道查找" in reply
    assert reply.endswith("不知道请回复「街道」）：")


async def test_someone_who_does_not_know_their_community_finds_it_by_street(say, district):
    """A new resident typed 不知道, then their street's name (向阳), and was told nothing matched."""
    await say("o_new", "绑定")
    streets = await say("o_new", "不知道")
    assert streets == "您住在哪个街道？请回复数字：\n1. 向阳街道\n2. 东山街道"
    assert (await say("o_new", "3")).startswith("请回复列表中的数字。")
    # 东山街道 has one community: chosen at once, its buildings asked.
    assert await say("o_new", "2") == "南山社区：请选择您的楼栋，回复数字：\n1. 8号楼"
    await say("o_new", "取消")
    await say("o_new", "绑定")
    # The street's own name finds its communities (the one here is chosen at once).
    assert (await say("o_new", "向阳")).startswith("大海阳社区：请选择您的楼栋")


async def test_bound_resident_changes_room_name_and_phone_through_my_info(phone, say, district, db):
    await make_resident(db, "o_zhang", district.buildings["B1"], room="101", phone="13800138000")
    info = (await phone.click("o_zhang", "MY_INFO")).text
    assert "住址：大海阳社区 1号楼 101" in info and "138****8000" in info and "13800138000" not in info
    assert "房号" in await say("o_zhang", "1")
    assert "房号格式不对" in await say("o_zhang", "一楼")
    assert await say("o_zhang", "3-502") == "已修改。房号：3-502"
    await say("o_zhang", "我的信息")
    await say("o_zhang", "3")
    assert (await say("o_zhang", "12")).startswith("手机号格式不对")
    assert await say("o_zhang", "13600001111") == "已修改。手机：136****1111"
    await say("o_zhang", "我的信息")
    await say("o_zhang", "2")
    assert await say("o_zhang", "张小三") == "已修改。姓名：张小三"
    await say("o_zhang", "我的信息")
    assert "议事通知已关闭" in await say("o_zhang", "5")
    row = await find_resident(db, "o_zhang")
    assert (row.room, row.phone, row.name, row.notify_consultation) == ("3-502", "13600001111", "张小三", False)


async def test_moving_to_another_building_keeps_name_and_phone(phone, say, district, db):
    await make_resident(db, "o_move", district.buildings["B1"], room="101", name="钱八", phone="13700000000")
    await phone.click("o_move", "MY_INFO")
    assert "社区的名称" in await say("o_move", "4")
    await say("o_move", "南山")
    await say("o_move", "1")
    confirm = await say("o_move", "602")
    assert "楼栋：8号楼" in confirm and "姓名：钱八" in confirm and "137****0000" in confirm
    await say("o_move", "1")
    row = await find_resident(db, "o_move")
    assert row.room == "602"
    assert (row.building_id, row.community_id) == (district.buildings["B4"].id, district.communities["C2"].id)


async def test_binding_with_the_phone_on_the_communitys_roster_links_the_roster_entry(phone, say, district, db, clock):
    roster = "openid,name,phone,building_code,room\n,周大爷,13511112222,B1,2单元301\n"
    assert (await import_residents(db, roster, Actor.operator("test"), clock.now())).ok
    await phone.follow("o_zhou", scene="B1")
    await say("o_zhou", "2单元301")
    await say("o_zhou", "周大爷")
    await say("o_zhou", "13511112222")
    done = await say("o_zhou", "1")
    assert "已与社区登记的住户信息核对一致" in done
    async with db.read() as s:
        entry = (await s.exec(select(RosterEntry))).one()
        resident = (await s.exec(select(Resident).where(Resident.openid == "o_zhou"))).one()
    assert entry.resident_id == resident.id and entry.linked_at is not None


# A tiny flow that needs a bound resident, next to the real routers.
needy = Router("needy", "测试服务")


@needy.command("测试反映", bound=True)
async def report(ctx: Context) -> str:
    return ctx.done(f"请描述问题（{ctx.resident.name}，{ctx.resident.room}）。")


@pytest.fixture
async def needy_phone(bot_server, settings, db, kv, clock):
    bot, url = bot_server
    bot.gateway.engine = Engine([needy, *ROUTERS], db, kv, clock, settings, bot.services)
    p = Phone(url, settings)
    yield p
    await p.close()


async def test_unbound_resident_is_sent_to_binding_and_the_command_resumes_afterwards(needy_phone, district, db):
    async def say(text: str) -> str:
        return (await needy_phone.text("o_needy", text)).text

    first = await say("测试反映")
    assert first.startswith("这项服务需要先绑定您的住址") and "社区的名称" in first
    await say("大海阳社区")
    await say("1")
    await say("5-101")
    await say("吴九")
    await say("18800001234")
    done = await say("1")
    assert done.startswith("绑定成功！大海阳社区 1号楼 5-101")
    assert done.endswith("请描述问题（吴九，5-101）。")
    assert (await find_resident(db, "o_needy")).is_bound
    assert (await say("测试反映")) == "请描述问题（吴九，5-101）。"  # bound now: straight in


async def test_a_problem_typed_before_binding_is_not_asked_for_again_after_it(say, district, db):
    offer = await say("o_new", "楼下垃圾桶满了好几天没人清")
    assert offer == "您是要反映这个问题吗？\n1. 是，帮我登记\n2. 不是"
    assert "社区的名称" in await say("o_new", "1")
    await say("o_new", "大海阳社区")
    await say("o_new", "1")
    await say("o_new", "5-101")
    await say("o_new", "吴九")
    await say("o_new", "18800001234")
    done = await say("o_new", "1")
    assert done.startswith("绑定成功！大海阳社区 1号楼 5-101")
    resumed = done.split("现在继续您刚才的操作：\n\n", 1)[1]
    assert "请用一两句话描述" not in resumed  # their words went on: the proposed category, not the blank question
    assert resumed.endswith("吗？\n1. 是\n2. 不是，我来选") and "「" in resumed


def test_a_room_needs_a_number_and_a_name_a_letter():
    from storage.residents import BindingError, clean_name, clean_room

    assert [clean_room(r) for r in ("2单元301", "1-2-301", "a301", "301室", "1")] == [
        "2单元301", "1-2-301", "A301", "301", "1"]
    assert [clean_name(n) for n in ("李秀英", "Anna Li", "李 秀 英")] == ["李秀英", "Anna Li", "李 秀 英"]
    for room in ("abc", "楼上那家", ""):
        with pytest.raises(BindingError):
            clean_room(room)
    for name in ("。", "3-1-101", "12345", "<b>"):
        with pytest.raises(BindingError):
            clean_name(name)


async def test_a_building_by_its_first_words_and_back_to_the_step_before(say, district):
    """「3号」 for 「3号楼」 was refused, and a resident who picked the wrong building or community could only 取消."""
    await say("o_back", "绑定")
    buildings = await say("o_back", "大海阳")
    assert buildings.startswith("大海阳社区：请选择您的楼栋")
    assert (await say("o_back", "2号")).startswith("请输入您的房号")
    assert await say("o_back", "返回") == buildings  # the building list again
    assert (await say("o_back", "上一步")).startswith("请输入您所在社区的名称")  # and the community question
    assert (await say("o_back", "南山")).startswith("南山社区：请选择您的楼栋")
