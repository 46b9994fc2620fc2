"""Unit members (单位成员: a property company, a volunteer association the community hands needs to) in the staff
console: they sign in with a link from 「后台」 as other staff do, see in 今日 and 台账 exactly the needs handed to
their unit, on a need's file only the actions chat lets them take (进展, 办结), and nothing of the community office's
pages; the nav offers only what they can use. A building leader still has no console."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlmodel import select

from storage.actor import actor_for
from storage.console_auth import ConsoleAuthError, issue_link
from storage.needs import NeedStatus, assign_unit, find_need, report_need, triage_need
from storage.org import Department
from storage.residents import find_resident
from storage.roles import AuditLog, Role
from tests.console_client import sign_in
from tests.factories import grant, make_district, make_resident

PHONE = "13912345678"
UNIT_NAV = ('href="/console/consultation"', 'href="/console/broadcasts"', 'href="/console/points"',
            'href="/console/stats"')


@pytest.fixture
async def town(db, clock):
    """C1 with its staff, a resident of B1, the unit 海阳物业 with one member, and three needs: one handed to the
    unit, one of C1 left with the community, one of C2."""
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"], room="301", phone=PHONE, name="李阿姨")
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    async with db.write() as s:
        unit = Department(code="U-WY", name="海阳物业", kind="enterprise")
        s.add(unit)
    member = await make_resident(db, "o_wy", d.buildings["B2"], name="物业老王", phone="13800000003")
    await grant(db, member, Role.UNIT_MEMBER, unit.id)
    leader = await make_resident(db, "o_leader", d.buildings["B1"], name="李楼长", phone="13500000001")
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B1"].id)
    southerner = await make_resident(db, "o_south", d.buildings["B4"], name="南山居民", phone="13600000002")

    handed = await report_need(db, resident.id, "楼道灯坏了，好几天了", "JZ-05", clock.now())
    kept = await report_need(db, resident.id, "小区门口垃圾没人清", "JZ-05", clock.now())
    elsewhere = await report_need(db, southerner.id, "南山路面积水", "JZ-05", clock.now())
    office = await actor_for(db, staff.id)
    await triage_need(db, office, handed.ticket, "B", clock.now())
    await assign_unit(db, office, handed.ticket, unit.id, clock.now())
    return {"d": d, "unit": unit, "member": member, "leader": leader, "handed": handed, "kept": kept,
            "elsewhere": elsewhere}


async def _audits(db, prefix: str) -> list[AuditLog]:
    async with db.read() as s:
        rows = await s.exec(select(AuditLog).where(AuditLog.action.startswith(prefix)).order_by(AuditLog.id))
        return list(rows.all())


def _nav(page: str) -> str:
    return re.search(r"<nav>.*?</nav>", page, re.S).group(0)


async def test_a_unit_member_signs_in_and_sees_only_the_needs_handed_to_the_unit(db, phone, browser, clock, town):
    clock.advance(days=14)  # every need overdue: each would be in 今日 for whoever may see it
    await sign_in(phone, browser, "o_wy")
    handed, kept, elsewhere = town["handed"], town["kept"], town["elsewhere"]

    status, page = await browser.get("/console/ledger")
    assert status == 200 and "共 1 条" in page and handed.ticket in page and "海阳物业" in page
    assert kept.ticket not in page and elsewhere.ticket not in page
    status, page = await browser.get("/console/")
    assert status == 200 and "物业老王" in page and 'id="count-overdue">1<' in page and 'id="count-triage">0<' in page
    assert handed.ticket in page and kept.ticket not in page and elsewhere.ticket not in page
    _status, export = await browser.get("/console/ledger.csv")
    assert handed.ticket in export and kept.ticket not in export and elsewhere.ticket not in export

    # Another need, of their community or not, is the same 404 as none at all.
    for ticket in (kept.ticket, elsewhere.ticket):
        status, page = await browser.get(f"/console/needs/{ticket}")
        assert status == 404 and "没有这个页面，或您无权查看" in page
    assert [a.actor for a in await _audits(db, "console.login")] == [f"resident:{town['member'].id}"]


async def test_a_unit_member_works_the_need_as_chat_lets_them_and_the_resident_is_told(
    db, phone, browser, bot_server, fake_wechat, town
):
    bot, _url = bot_server
    await sign_in(phone, browser, "o_wy")
    ticket = town["handed"].ticket
    csrf = await browser.csrf()

    status, page = await browser.get(f"/console/needs/{ticket}")
    assert status == 200 and "楼道灯坏了，好几天了" in page and '<dd id="unit">海阳物业</dd>' in page
    forms = set(re.findall(r'id="form-([a-z]+)"', page))
    assert forms == {"progress", "resolve"}  # chat's 进展 and 办结; the community's actions are not offered
    assert 'id="reveal"' in page  # chat's 号码 is theirs too (every reveal audited)

    status, page = await browser.post(f"/console/needs/{ticket}/progress",
                                      {"csrf": csrf, "text": "已派电工，今天下午更换。"})
    assert status == 200 and "已登记进展" in page and "已派电工，今天下午更换。" in page
    assert "海阳物业·物业老王" in page  # the unit as residents read it, and who it was
    [row] = await _audits(db, "need.progress")
    assert row.actor == f"resident:{town['member'].id}"
    await bot.services["sender"].drain()
    assert any("已派电工，今天下午更换" in t for t in fake_wechat.texts_to("o_res"))

    # What chat would refuse them, posted anyway, is refused by the operation with its sentence; nothing changes.
    status, page = await browser.post(f"/console/needs/{ticket}/reject", {"csrf": csrf, "text": "不归物业管。"})
    assert status == 400 and f"诉求 {ticket} 不在您负责的社区。" in page
    status, page = await browser.post(f"/console/needs/{town['kept'].ticket}/progress",
                                      {"csrf": csrf, "text": "顺手看看"})
    assert status == 404
    need = await find_need(db, ticket)
    assert need.status == NeedStatus.IN_PROGRESS.value and need.unit_id == town["unit"].id
    assert await _audits(db, "need.reject") == []


async def test_the_office_pages_are_not_theirs_and_the_nav_does_not_offer_them(db, phone, browser, town):
    await sign_in(phone, browser, "o_wy")
    _status, page = await browser.get("/console/")
    nav = _nav(page)
    assert 'href="/console/ledger"' in nav and not any(link in nav for link in UNIT_NAV)

    status, page = await browser.get("/console/stats")
    assert status == 403 and "统计只对社区工作人员和管理员开放。" in page and "大海阳社区" not in page
    assert not any(link in _nav(page) for link in UNIT_NAV)
    for path in ("/console/assess", "/console/reports"):
        status, page = await browser.get(path)
        assert status == 403 and "只对社区工作人员、区级工作人员和管理员开放" in page, path
    # The pages without a refusal of their own show nothing of any community to them.
    for path in ("/console/consultation", "/console/broadcasts", "/console/points", "/console/projects",
                 "/console/people"):
        status, page = await browser.get(path)
        assert status == 200 and "大海阳社区" not in page and "南山社区" not in page, path
    assert (await browser.get("/console/people/audit"))[0] == 403

    # Community staff still have every entry.
    office = type(browser)(browser.base)
    try:
        await sign_in(phone, office, "o_staff")
        _status, page = await office.get("/console/")
        assert all(link in _nav(page) for link in UNIT_NAV)
    finally:
        await office.close()


async def test_a_unit_member_gets_a_link_in_chat_and_a_building_leader_still_does_not(db, phone, town):
    reply = (await phone.text("o_wy", "后台")).text
    assert reply.startswith("管理后台登录链接（10分钟内有效，只能用一次，请勿转发）：\nhttp://")
    assert "/console/login/" not in (await phone.text("o_leader", "后台")).text
    leader = town["leader"]
    with pytest.raises(ConsoleAuthError, match="只对社区、网格、区级工作人员和承办单位成员开放"):
        await issue_link(db, await actor_for(db, leader.id), leader.id, dt.datetime.now(dt.UTC))
    assert [a.actor for a in await _audits(db, "console.link")] == [f"resident:{town['member'].id}"]


async def test_staff_hand_a_need_to_a_unit_from_the_console_as_from_chat(
    db, phone, browser, bot_server, fake_wechat, clock, town
):
    bot, _url = bot_server
    kept = town["kept"]
    await triage_need(db, await actor_for(db, (await find_resident(db, "o_staff")).id), kept.ticket, "B", clock.now())
    await sign_in(phone, browser, "o_staff")
    csrf = await browser.csrf()
    _status, page = await browser.get(f"/console/needs/{kept.ticket}")
    assert f'<option value="unit:{town["unit"].id}">海阳物业（单位）</option>' in page  # beside the people, as chat

    status, page = await browser.post(f"/console/needs/{kept.ticket}/assign",
                                      {"csrf": csrf, "person": f"unit:{town['unit'].id}"})
    assert status == 200 and "已指派。" in page and "已交由海阳物业办理" in page
    need = await find_need(db, kept.ticket)
    assert (need.unit_id, need.assignee_id) == (town["unit"].id, None)
    [row] = [a for a in await _audits(db, "need.assign") if kept.ticket in (a.target_id or "")]
    assert "U-WY" in (row.detail or "")
    await bot.services["sender"].drain()
    assert any("【新派单】" in t and kept.ticket in t for t in fake_wechat.texts_to("o_wy"))

    # A made-up value is refused with the sentence, and nothing changes.
    status, page = await browser.post(f"/console/needs/{kept.ticket}/assign", {"csrf": csrf, "person": "team:1"})
    assert status == 400 and "请选择负责人或单位。" in page
    assert (await find_need(db, kept.ticket)).unit_id == town["unit"].id


async def test_a_unit_member_takes_a_project_reports_progress_and_submits_it_from_the_console(
    db, phone, browser, bot_server, fake_wechat, clock, town
):
    from storage.projects import ProjectStatus, create_project, get_project, publish_project

    bot, _url = bot_server
    office = await actor_for(db, (await find_resident(db, "o_staff")).id)
    project = await create_project(
        db, community_id=town["d"].communities["C1"].id, title="楼道照明改造", content="为1号楼更换楼道灯",
        measures="采购LED声控灯并安装", deadline=clock.now().date() + dt.timedelta(days=30), actor=office,
        now=clock.now(), need_tickets=[town["kept"].ticket])
    await publish_project(db, project.id, actor=office, now=clock.now())
    await sign_in(phone, browser, "o_wy")
    status, page = await browser.get("/console/unit/projects")
    assert status == 200 and 'href="/console/unit/projects" class="on">单位项目<' in page
    assert f'id="open-{project.id}"' in page and "楼道照明改造" in page and "共 1 个" in page
    csrf = await browser.csrf()

    status, page = await browser.post(f"/console/unit/projects/{project.id}/claim", {"csrf": csrf})
    assert status == 200 and "接单成功" in page and f'id="project-{project.id}"' in page
    assert f'id="open-{project.id}"' not in page  # taken: no longer offered
    status, page = await browser.post(f"/console/unit/projects/{project.id}/progress",
                                      {"csrf": csrf, "text": "已完成材料采购，下周开工。"})
    assert status == 200 and "进展已登记" in page and "已完成材料采购，下周开工。" in page
    status, page = await browser.post(f"/console/unit/projects/{project.id}/complete",
                                      {"csrf": csrf, "text": "10盏灯已全部安装。"})
    assert status == 200 and "已提交社区验收" in page and "等待社区验收" in page
    assert (await get_project(db, project.id)).status == ProjectStatus.AWAITING_ACCEPTANCE
    assert [a.action for a in await _audits(db, "project.")][-3:] == [
        "project.claim", "project.progress", "project.complete"]
    assert all(a.actor == f"resident:{town['member'].id}" for a in (await _audits(db, "project."))[-3:])
    await bot.services["sender"].drain()
    assert any("已完成材料采购" in t for t in fake_wechat.texts_to("o_res"))  # the reporter of the linked need

    # Refused as chat refuses: again, or empty; the sentence shows and nothing changes.
    status, page = await browser.post(f"/console/unit/projects/{project.id}/progress", {"csrf": csrf, "text": "再看"})
    assert status == 400 and "不能再报告进展" in page
    status, page = await browser.post("/console/unit/projects/99999/claim", {"csrf": csrf})
    assert status == 400 and "没有编号为 99999 的服务项目" in page

    # Staff have no unit: the page says it is not theirs, and their nav does not offer it.
    other = type(browser)(browser.base)
    try:
        await sign_in(phone, other, "o_staff")
        status, page = await other.get("/console/unit/projects")
        assert status == 403 and "单位项目只对单位成员开放。" in page and "楼道照明改造" not in page
        assert 'href="/console/unit/projects"' not in _nav(page)
        assert (await other.post(f"/console/unit/projects/{project.id}/complete",
                                 {"csrf": await other.csrf(), "text": "x"}))[0] == 404
    finally:
        await other.close()


async def test_a_need_taken_from_the_unit_is_said_so_to_its_members(db, clock, town):
    from storage.needs import assign_need
    from storage.outbox import OutboxMessage

    staff = await find_resident(db, "o_staff")
    office = await actor_for(db, staff.id)
    handed = town["handed"]
    await assign_need(db, office, handed.ticket, "", clock.now(), person_id=staff.id)
    async with db.read() as s:
        told = (await s.exec(select(OutboxMessage.text).where(OutboxMessage.resident_id == town["member"].id,
                                                               OutboxMessage.text.contains("派单变更")))).all()
    assert told == [f"【派单变更】{handed.ticket}「楼道灯坏了，好几天了」已改由社区工作人员社工小周办理，"
                    "您无需再处理。"]
    assert (await find_need(db, handed.ticket)).unit_id is None
