"""Staff get their own numbered menu and a short command help; residents' 菜单 is unchanged.

`菜单` for someone holding staff roles lists the staff entries of their roles (declared next to their handlers
with `@router.staff_menu`) and one entry leading to the resident menu; a number starts that flow, as in the
resident menu. `命令` (and, for staff, `帮助`) lists the typed commands the sender's roles may use, in at most
two phone-sized pages. Every reply of each exchange is checked in full."""

from __future__ import annotations

from sqlalchemy import event

from handlers import ROUTERS, leader, menu, needs
from handlers.binding import ASK_COMMUNITY, NEEDS_BINDING
from handlers.framework import Engine
from storage.broadcast import MAX_TEXT
from storage.roles import Role
from tests.factories import grant, make_district, make_resident

RESIDENT_MENU = (
    "民需管家为您服务，请回复数字：\n1. 反映问题\n2. 我的诉求\n3. 阳光17议\n4. 志愿积分\n5. 服务项目\n6. 项目评议\n"
    "7. 我的信息\n随时回复「取消」可退出当前操作。"
)
COMMUNITY_STAFF_MENU = (
    "工作人员菜单，请回复数字：\n1. 待分流诉求\n2. 绑定核实\n3. 发送广播\n4. 议事设置\n5. 新建项目\n6. 发布活动\n"
    "7. 兑换核销\n8. 投递失败\n9. 本月统计\n10. 居民服务（反映问题等）\n回复「命令」查看口令，「取消」退出当前操作。"
)
LEADER_MENU = (
    "工作人员菜单，请回复数字：\n1. 代居民反映\n2. 楼栋诉求\n3. 居民服务（反映问题等）\n"
    "回复「命令」查看口令，「取消」退出当前操作。"
)
UNIT_MENU = (
    "工作人员菜单，请回复数字：\n1. 单位待办\n2. 可接项目\n3. 本单位项目\n4. 居民服务（反映问题等）\n"
    "回复「命令」查看口令，「取消」退出当前操作。"
)
ASK_BROADCAST = f"请输入要发送的通知内容（{MAX_TEXT}字以内）："
LEFT_BROADCAST = "已退出「发送广播」，刚才填写的内容没有保存。回复「菜单」查看全部服务。"
NO_NEEDS = "暂无待分流的诉求。"
LEFT_LEADER = "已退出「代报诉求」，刚才填写的内容没有保存。回复「菜单」查看全部服务。"
NO_OPEN_PROJECTS = "目前没有待接单的服务项目。有新项目发布时会通知您。"
MY_NO_NEEDS = needs.NO_NEEDS
NO_FAILED_DELIVERIES = "目前没有投递失败的消息。"
LEADER_HELP = (
    "工作人员口令（编号见各列表）：\n代报：替居民反映问题\n楼栋诉求 [页码]：未办结诉求\n"
    "居民服务（反映问题等）在「菜单」的最后一项。"
)
GRID_HELP = (
    "工作人员口令（编号见各列表）：\n代报：替居民反映问题\n楼栋诉求 [页码]：未办结诉求\n进展 编号 进展内容\n"
    "号码 编号（看完整手机号）\n办结 编号 办理结果\n后台：电脑登录管理后台\n"
    "居民服务（反映问题等）在「菜单」的最后一项。"
)
UNIT_HELP = (
    "工作人员口令（编号见各列表）：\n进展 编号 进展内容\n号码 编号（看完整手机号）\n办结 编号 办理结果\n"
    "单位待办 [页码]：派给本单位的诉求\n可接项目 [页码]\n接单 项目编号\n我的项目：本单位承接的\n项目进展 编号 内容\n"
    "项目完成 编号 完成情况\n后台：电脑登录管理后台\n居民服务（反映问题等）在「菜单」的最后一项。"
)
RESIDENT_HELP = (
    "常用口令（也可回复「菜单」按数字选择）：\n我的信息：住址与手机\n反映 [问题描述]\n进度 [编号]：我的诉求\n"
    "评价：给办结的诉求打分\n项目 [编号]：社区服务项目\n评议：年度项目评议投票\n查验 回执码：核对评议投票\n"
    "问卷：满意度问卷（抽到时）\n议事：阳光17议\n取消预约：议事座位或候补\n提议题 / 我的议题\n积分 / 积分明细\n"
    "兑换 / 我的兑换\n捐赠积分：捐给社区或邻居\n志愿活动：报名\n签到 / 签退 [签到码]"
)


async def talk(phone, openid: str, exchange: list[tuple[str, str]]) -> None:
    """Send each message and check the whole reply."""
    for sent, expected in exchange:
        answer = await phone.text(openid, sent)
        assert answer.status == 200
        assert answer.text == expected, f"after «{sent}»"


async def test_staff_menu_lists_their_entries_and_a_number_starts_that_flow(phone, db):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="王干事", phone="13900000001")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    await talk(phone, "o_staff", [
        ("菜单", COMMUNITY_STAFF_MENU),
        ("3", ASK_BROADCAST),
        ("取消", LEFT_BROADCAST),
        ("菜单", COMMUNITY_STAFF_MENU),
        ("1", NO_NEEDS),
        # The last entry leads to the resident menu they still have, whose numbers work as for any resident.
        ("菜单", COMMUNITY_STAFF_MENU),
        ("10", RESIDENT_MENU),
        ("1", needs.ASK_TEXT),
    ])


async def test_leaders_and_unit_members_see_only_their_own_entries(phone, db):
    d = await make_district(db)
    lead = await make_resident(db, "o_lead", d.buildings["B1"], name="李楼长", phone="13900000002")
    await grant(db, lead, Role.BUILDING_LEADER, d.buildings["B1"].id)
    unit = await make_resident(db, "o_unit", d.buildings["B2"], name="赵工", phone="13900000003")
    await grant(db, unit, Role.UNIT_MEMBER, d.departments["D-JS"].id)
    await talk(phone, "o_lead", [("菜单", LEADER_MENU), ("1", leader.ASK_WHO), ("取消", LEFT_LEADER)])
    await talk(phone, "o_unit", [("菜单", UNIT_MENU), ("2", NO_OPEN_PROJECTS)])


async def test_the_resident_menu_is_unchanged_and_staff_entries_refuse_residents(phone, db):
    d = await make_district(db)
    await make_resident(db, "o_res", d.buildings["B1"])
    await talk(phone, "o_res", [
        ("菜单", RESIDENT_MENU),
        ("2", MY_NO_NEEDS),
        ("帮助", RESIDENT_MENU),  # for a resident the numbered menu is the help
        ("命令", RESIDENT_HELP),
    ])
    refused = await phone.click("o_res", "STAFF_INBOX")
    assert refused.text == "抱歉，「待分流诉求」仅限社区工作人员、管理员使用。如需开通请联系社区。"
    # 全部工作 on a staff custom menu; a resident never has it, and would just get their own menu.
    assert (await phone.click("o_res", menu.STAFF_MENU_KEY)).text == RESIDENT_MENU


async def test_the_custom_menus_all_work_button_opens_the_staff_menu_even_mid_flow(phone, db):
    d = await make_district(db)
    staff = await make_resident(db, "o_staff2", d.buildings["B1"], name="王干事", phone="13900000001")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    await talk(phone, "o_staff2", [("广播", ASK_BROADCAST)])
    assert (await phone.click("o_staff2", menu.STAFF_MENU_KEY)).text == COMMUNITY_STAFF_MENU
    await talk(phone, "o_staff2", [("8", NO_FAILED_DELIVERIES)])


async def test_an_unbound_staff_member_picking_a_resident_entry_is_asked_to_bind_first(phone, db):
    d = await make_district(db)
    staff = await make_resident(db, "o_unbound", None)
    await grant(db, staff, Role.UNIT_MEMBER, d.departments["D-JS"].id)
    await talk(phone, "o_unbound", [
        ("菜单", UNIT_MENU), ("4", RESIDENT_MENU), ("1", NEEDS_BINDING + "\n" + ASK_COMMUNITY),
    ])


async def test_help_lists_each_roles_commands(phone, db):
    d = await make_district(db)
    lead = await make_resident(db, "o_lead_h", d.buildings["B1"], phone="13900000004")
    await grant(db, lead, Role.BUILDING_LEADER, d.buildings["B1"].id)
    grid = await make_resident(db, "o_grid_h", d.buildings["B2"], phone="13900000005")
    await grant(db, grid, Role.GRID_WORKER, d.grids["G1"].id)
    await talk(phone, "o_lead_h", [("帮助", LEADER_HELP), ("命令", LEADER_HELP)])
    await talk(phone, "o_grid_h", [("命令", GRID_HELP)])
    unit = await make_resident(db, "o_unit_h", d.buildings["B2"], phone="13900000007")
    await grant(db, unit, Role.UNIT_MEMBER, d.departments["D-JS"].id)
    await talk(phone, "o_unit_h", [("命令", UNIT_HELP)])  # 后台 is theirs too: the console shows their unit's needs


async def test_help_for_every_role_at_once_fits_three_phone_sized_pages(phone, db):
    d = await make_district(db)
    boss = await make_resident(db, "o_all", d.buildings["B1"], phone="13900000006")
    for role, scope in ((Role.ADMIN, None), (Role.COMMUNITY_STAFF, d.communities["C1"].id),
                        (Role.DISTRICT_STAFF, d.departments["D-JS"].id), (Role.UNIT_MEMBER, d.departments["D-RS"].id),
                        (Role.GRID_WORKER, d.grids["G1"].id), (Role.BUILDING_LEADER, d.buildings["B1"].id)):
        await grant(db, boss, role, scope)
    first = (await phone.text("o_all", "命令")).text
    second = (await phone.text("o_all", "下一页")).text  # the word every list takes
    third = (await phone.text("o_all", "命令 3")).text
    assert first.startswith(menu.STAFF_HELP_HEADING + "\n") and first.endswith("\n回复「下一页」继续看。")
    assert second.startswith(menu.HELP_CONTINUED + "\n") and second.endswith("\n回复「下一页」继续看。")
    assert third.startswith(menu.HELP_CONTINUED + "\n") and "下一页" not in third
    assert (await phone.text("o_all", "下一页")).text == "已经是最后一页了。"
    assert (await phone.text("o_all", "命令 4")).text == "口令只有3页。回复「命令」从第一页看。"
    for page in (first, second, third):
        assert len(page.encode()) <= 2048  # one passive text reply
        assert len(page.splitlines()) <= menu.HELP_PAGE_LINES + 2  # a screenful: heading, lines, "next page"
        assert all(len(line) <= 24 for line in page.splitlines()[1:-1])  # a line fits a phone's width
    staff_lines = [h.text for r in ROUTERS for h in r.help_lines if h.roles]
    shown = first.splitlines()[1:-1] + second.splitlines()[1:-1] + third.splitlines()[1:]
    assert shown == [*staff_lines, menu.HELP_TAIL]
    assert (await phone.text("o_all", "帮助3")).text == third
    assert (await phone.text("o_all", "帮助2")).text == second


def test_every_staff_entry_is_a_click_key_of_the_engine_and_names_its_roles():
    entries = Engine.collect_staff_menu(ROUTERS)
    keys = [e.key for e in entries]
    assert len(keys) == len(set(keys))
    assert all(e.route.roles for e in entries)
    assert not set(keys) & {e.key for e in Engine.collect_menu(ROUTERS)}


async def test_a_first_message_reads_no_role_grants_and_the_next_one_does(phone, db):
    # Nothing can grant a role to a row this very message made; a staff member's roles are read from their
    # second message on (and every message of someone already known), so a grant is never missed.
    seen: list[str] = []
    listen = lambda _c, _cur, statement, *_a: seen.append(statement)  # noqa: E731
    event.listen(db.engine.sync_engine, "before_cursor_execute", listen)
    try:
        assert (await phone.text("o_brand_new", "菜单")).text == RESIDENT_MENU
        first = [s for s in seen if "role_grant" in s]
        seen.clear()
        assert (await phone.text("o_brand_new", "菜单")).text == RESIDENT_MENU
        second = [s for s in seen if "role_grant" in s]
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", listen)
    assert first == [] and len(second) == 1


async def test_a_menu_entry_typed_as_it_reads_starts_it_as_its_number_does(phone, db):
    d = await make_district(db)
    staff = await make_resident(db, "o_typed", d.buildings["B1"], phone="13900000011")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    member = await make_resident(db, "o_typed_unit", d.buildings["B2"], phone="13900000012")
    await grant(db, member, Role.UNIT_MEMBER, d.departments["D-RS"].id)
    assert (await phone.text("o_typed", "兑换核销")).text == "请输入居民出示的取货码："  # the staff menu's words
    assert (await phone.text("o_typed", "取消")).text.startswith("已退出")
    assert (await phone.text("o_typed_unit", "本单位项目")).text.startswith("本单位目前没有实施中的项目")
    resident = await make_resident(db, "o_typed_res", d.buildings["B1"], room="301")
    assert resident.is_bound
    assert "余额 0 分" in (await phone.text("o_typed_res", "志愿积分")).text  # the resident menu's words too
