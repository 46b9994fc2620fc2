"""The console's 积分, 项目与评议 and 居民与待核实 pages (bot/console/c3.py): each form does what chat's 居民查询,
确认时长, 核销, 取消兑换, 验收 and 待核实 do — their effect, their audit row, the resident's notice — another
community's record is 404, a form without the CSRF token is refused, and the role grants and the audit log are
the admin's alone."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from sqlmodel import select

from bot.config import Settings
from storage import rewards as rw
from storage.activities import Activity, ActivitySignup, SignupStatus
from storage.actor import Actor, actor_for
from storage.claims import BindingClaim, ClaimStatus
from storage.needs import report_need
from storage.outbox import OutboxMessage
from storage.points import PointsPolicy, balance_of, credit_service
from storage.projects import Project, ProjectStatus, accept_project, create_project
from storage.residents import Resident
from storage.review import Review, ReviewItem, ReviewTally, open_review
from storage.roles import AuditLog, Role, RoleGrant
from storage.survey import SurveySample, answer_survey, start_survey
from tests.browser import ARTIFACTS
from tests.console_client import sign_in
from tests.factories import grant, make_district, make_resident

CLI = Actor.operator("cli:test")


@pytest.fixture
def settings(fake_wechat, tmp_path) -> Settings:
    return Settings(wechat_token="stewardtest", wechat_api_base=fake_wechat.base_url, media_dir=tmp_path / "media")


@pytest.fixture
async def town(db, clock):
    """C1 with a staff member, a volunteer with points and a rice redemption, an activity they attended, a project
    waiting for 验收 and a binding claim waiting for 核实; C2 with its own staff member, activity and project."""
    d = await make_district(db)
    c1, c2 = d.communities["C1"].id, d.communities["C2"].id
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, c1)
    other = await make_resident(db, "o_other", d.buildings["B4"], name="南山小王", phone="13600000000")
    await grant(db, other, Role.COMMUNITY_STAFF, c2)
    admin = await make_resident(db, "o_admin", d.buildings["B2"], name="区管理员", phone="13300000000")
    await grant(db, admin, Role.ADMIN)
    volunteer = await make_resident(db, "o_vol", d.buildings["B1"], room="301", name="李阿姨", phone="13912345678")
    now = clock.now()
    async with db.write() as s:
        await credit_service(s, volunteer.id, 20, reason="志愿活动「清扫楼道」", reference="activity:0",
                             actor="cli:test", now=now, key="seed", policy=PointsPolicy())
    rice = await rw.add_reward(db, CLI, c1, "大米一袋", 50, 3, now)
    volunteer = await _resident(db, volunteer.id)
    code = (await rw.redeem(db, volunteer, rice.id, "k1", now)).redemption.pickup_code
    activities = {}
    async with db.write() as s:
        for key, community, title in (("c1", c1, "清扫楼道"), ("c2", c2, "南山义诊")):
            a = Activity(community_id=community, title=title, place="小区广场", starts_at=now - dt.timedelta(hours=3),
                         ends_at=now - dt.timedelta(hours=1), capacity=10, half_hours=4,
                         checkin_code=f"IN{key}", checkout_code=f"OUT{key}", created_by="cli:test",
                         created_at=now - dt.timedelta(days=2))
            s.add(a)
            activities[key] = a
        await s.flush()
        s.add(ActivitySignup(activity_id=activities["c1"].id, resident_id=volunteer.id, status=SignupStatus.SIGNED,
                             queued_at=now - dt.timedelta(days=1), checked_in_at=now - dt.timedelta(hours=3),
                             checked_out_at=now - dt.timedelta(hours=1)))
        s.add(ActivitySignup(activity_id=activities["c1"].id, resident_id=staff.id, status=SignupStatus.SIGNED,
                             queued_at=now - dt.timedelta(days=1)))
    projects = {}
    for key, community, title, asker in (("c1", c1, "老年活动室", volunteer), ("c2", c2, "南山健身角", other)):
        need = await report_need(db, asker.id, "希望有个活动的地方", "WJ-01", now)
        p = await create_project(db, community_id=community, title=title, content="改造闲置用房",
                                 measures="社会组织运营", deadline=dt.date(2027, 3, 31), actor=CLI, now=now,
                                 need_tickets=[need.ticket])
        async with db.write() as s:
            row = await s.get(Project, p.id)
            row.status, row.submitted_at, row.completion_note = ProjectStatus.AWAITING_ACCEPTANCE, now, "已装修完毕"
            s.add(row)
        projects[key] = p
    claimant = await make_resident(db, "o_claimant")
    claims = {}
    async with db.write() as s:
        for key, building, phone_no in (("c1", d.buildings["B2"], "13512340001"), ("c2", d.buildings["B4"],
                                                                                     "13512340002")):
            claim = BindingClaim(resident_id=claimant.id, community_id=building.community_id,
                                 building_id=building.id, room="502", name="周大爷", phone=phone_no,
                                 status=ClaimStatus.PENDING, created_at=now)
            s.add(claim)
            claims[key] = claim
    return {"d": d, "staff": staff, "other": other, "admin": admin, "volunteer": volunteer, "code": code,
            "activities": activities, "projects": projects, "claims": claims, "claimant": claimant}


async def _resident(db, resident_id: int) -> Resident:
    async with db.read() as s:
        return await s.get(Resident, resident_id)


async def _audits(db, action: str) -> list[AuditLog]:
    async with db.read() as s:
        return list((await s.exec(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id))).all())


async def _told(db, resident_id: int) -> list[str]:
    async with db.read() as s:
        query = select(OutboxMessage.text).where(OutboxMessage.resident_id == resident_id).order_by(OutboxMessage.id)
        return list((await s.exec(query)).all())


def _text(page: str) -> str:
    """The page's words without tags, to check what a person reads."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


async def test_staff_look_up_a_residents_points_by_phone_and_the_lookup_is_audited(db, phone, browser, town):
    await sign_in(phone, browser, "o_staff")
    status, page = await browser.get("/console/points")
    assert status == 200 and "<h1>积分</h1>" in page and 'class="on">积分与居民' in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)

    status, page = await browser.post("/console/points/lookup", {"csrf": csrf, "phone": "13912345678"})
    words = _text(page)
    assert status == 200 and "李阿姨 139****5678 · 大海阳社区 1号楼 301" in words
    assert "积分余额 50" in words and "累计服务 10 小时" in words  # 100 earned, 50 spent on rice
    assert "兑换 -50 兑换「大米一袋」" in words and "服务 +100 志愿活动「清扫楼道」" in words
    assert "13912345678" not in page
    [row] = await _audits(db, "resident_lookup")
    assert row.target_id == "139****5678" and '"found": 1' in row.detail

    status, page = await browser.post("/console/points/lookup", {"csrf": csrf, "phone": "12"})
    assert status == 400 and "手机号格式不对" in page
    # 南山's staff do not find a 大海阳 resident (and that lookup is audited too).
    await browser.post("/console/logout", {"csrf": csrf})
    await sign_in(phone, browser, "o_other")
    csrf = await browser.csrf("/console/points")
    status, page = await browser.post("/console/points/lookup", {"csrf": csrf, "phone": "13912345678"})
    assert status == 200 and "在您负责的社区中没有手机号为 139****5678 的居民。" in page
    assert len(await _audits(db, "resident_lookup")) == 2


async def test_staff_confirm_an_activitys_hours_and_the_volunteer_is_credited_once(db, phone, browser, town):
    await sign_in(phone, browser, "o_staff")
    mine, theirs = town["activities"]["c1"], town["activities"]["c2"]
    status, page = await browser.get("/console/points")
    assert f'/console/points/activities/{mine.id}"' in page and "南山义诊" not in page
    status, page = await browser.get(f"/console/points/activities/{mine.id}")
    words = _text(page)
    assert status == 200 and "已签到签退待确认： 1 人" in words and "社工小周 137****0000 未签到 未签退" in words
    assert (await browser.get(f"/console/points/activities/{theirs.id}"))[0] == 404
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert (await browser.post(f"/console/points/activities/{theirs.id}/confirm", {"csrf": csrf}))[0] == 404

    before = await balance_of(db, town["volunteer"].id)
    status, page = await browser.post(f"/console/points/activities/{mine.id}/confirm", {"csrf": csrf})
    assert status == 200 and "已确认时长，志愿者会收到积分通知。" in page and "已确认 +" in page
    assert "目前没有待确认的志愿者。" in page
    after = await balance_of(db, town["volunteer"].id)
    assert after > before
    [row] = await _audits(db, "activity.confirm")
    assert row.actor == f"resident:{town['staff'].id}"
    assert '"credited": 1' in row.detail and '"skipped": 1' in row.detail
    assert any("感谢您参加「清扫楼道」" in t for t in await _told(db, town["volunteer"].id))
    # A second confirmation credits nobody again.
    await browser.post(f"/console/points/activities/{mine.id}/confirm", {"csrf": csrf})
    assert await balance_of(db, town["volunteer"].id) == after


async def test_staff_fulfil_or_cancel_a_redemption_by_its_pickup_code(db, phone, browser, town, clock):
    await sign_in(phone, browser, "o_staff")
    csrf = await browser.csrf("/console/points")
    code = town["code"]
    status, page = await browser.post("/console/points/redemption", {"csrf": csrf, "code": code.lower()})
    words = _text(page)
    assert status == 200 and f"取货码 {code}" in words and "大米一袋（50 积分）" in words
    assert "李阿姨（139****5678）" in words and "待领取" in words and 'id="form-fulfil"' in page

    status, page = await browser.post("/console/points/redemption", {"csrf": csrf, "code": code, "do": "cancel",
                                                                      "reason": "x"})
    assert status == 400 and "请写明取消的原因（会告知居民）。" in page
    status, page = await browser.post("/console/points/redemption", {"csrf": csrf, "code": code, "do": "fulfil"})
    assert status == 200 and "已核销，请把物品交给居民。" in page and "已领取" in page
    assert 'id="form-fulfil"' not in page
    [row] = await _audits(db, "redemption.fulfil")
    assert row.actor == f"resident:{town['staff'].id}" and code in row.detail
    status, page = await browser.post("/console/points/redemption", {"csrf": csrf, "code": code, "do": "fulfil"})
    assert status == 400 and "这个取货码已领取，不能再核销。" in page

    # A second redemption is cancelled with a reason: points back, the resident told, audited.
    volunteer = await _resident(db, town["volunteer"].id)
    rice_id = (await rw.catalogue(db, town["d"].communities["C1"].id))[0].id
    async with db.write() as s:
        await credit_service(s, volunteer.id, 10, reason="补记", reference="", actor="cli:test", now=clock.now(),
                             key="seed2", policy=PointsPolicy())
    second = (await rw.redeem(db, volunteer, rice_id, "k2", clock.now())).redemption.pickup_code
    before = await balance_of(db, volunteer.id)
    status, page = await browser.post("/console/points/redemption",
                                      {"csrf": csrf, "code": second, "do": "cancel", "reason": "库存清点有误"})
    assert status == 200 and "已取消兑换，积分已退回，居民会收到通知。" in page and "已取消" in page
    assert await balance_of(db, volunteer.id) == before + 50
    [row] = await _audits(db, "redemption.cancel")
    assert "库存清点有误" in row.detail
    assert any("原因：库存清点有误" in t for t in await _told(db, volunteer.id))

    # Another community's staff cannot find the code.
    await browser.post("/console/logout", {"csrf": csrf})
    await sign_in(phone, browser, "o_other")
    csrf = await browser.csrf("/console/points")
    status, page = await browser.post("/console/points/redemption", {"csrf": csrf, "code": second, "do": "find"})
    assert status == 400 and "没有找到这个取货码，请核对后重试。" in page


async def test_projects_awaiting_acceptance_come_first_and_staff_accept_or_return_them(db, phone, browser, town):
    await sign_in(phone, browser, "o_staff")
    mine, theirs = town["projects"]["c1"], town["projects"]["c2"]
    status, page = await browser.get("/console/projects")
    words = _text(page)
    assert status == 200 and "老年活动室 待验收" in words and "南山健身角" not in page
    assert "还没有评议。" in page and "还没有问卷结果。" in page
    assert (await browser.get(f"/console/projects/{theirs.id}"))[0] == 404
    status, page = await browser.get(f"/console/projects/{mine.id}")
    assert status == 200 and 'id="form-accept"' in page and "已装修完毕" in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert (await browser.post(f"/console/projects/{theirs.id}/accept", {"csrf": csrf}))[0] == 404

    status, page = await browser.post(f"/console/projects/{mine.id}/return", {"csrf": csrf, "reason": "短"})
    assert status == 400 and "退回原因需在2到200字之间。" in page
    status, page = await browser.post(f"/console/projects/{mine.id}/return", {"csrf": csrf, "reason": "地面未做防滑"})
    assert status == 200 and "已退回整改，承接单位会收到原因。" in page and "验收退回 地面未做防滑" in _text(page)
    async with db.read() as s:
        assert (await s.get(Project, mine.id)).status == ProjectStatus.IN_PROGRESS
    [row] = await _audits(db, "project.return")
    assert row.actor == f"resident:{town['staff'].id}" and "地面未做防滑" in row.detail
    status, page = await browser.post(f"/console/projects/{mine.id}/accept", {"csrf": csrf})
    assert status == 400 and "项目当前状态为「实施中」，不在待验收中。" in page

    async with db.write() as s:
        row = await s.get(Project, mine.id)
        row.status = ProjectStatus.AWAITING_ACCEPTANCE
        s.add(row)
    status, page = await browser.post(f"/console/projects/{mine.id}/accept", {"csrf": csrf, "note": "现场已核实"})
    assert status == 200 and "已验收通过" in page and "验收通过 现场已核实" in _text(page)
    async with db.read() as s:
        assert (await s.get(Project, mine.id)).status == ProjectStatus.COMPLETED
    assert len(await _audits(db, "project.accept")) == 1
    status, page = await browser.get("/console/projects?status=completed")
    assert "老年活动室" in page


async def test_staff_confirm_and_reject_binding_claims_of_their_community_only(db, phone, browser, town):
    await sign_in(phone, browser, "o_staff")
    mine, theirs = town["claims"]["c1"], town["claims"]["c2"]
    status, page = await browser.get("/console/people")
    words = _text(page)
    assert status == 200 and "共 1 条" in words and "周大爷 135****0001" in words and "大海阳社区 2号楼 502" in words
    assert "135****0002" not in page and "13512340001" not in page
    assert 'id="grants"' not in page and 'id="audit-link"' not in page  # not an admin
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert (await browser.post(f"/console/people/claims/{theirs.id}/confirm", {"csrf": csrf}))[0] == 404

    status, page = await browser.post(f"/console/people/claims/{mine.id}/confirm", {"csrf": csrf})
    assert status == 200 and "已确认绑定，居民会收到通知。" in page and "没有待核实的绑定。" in page
    claimant = await _resident(db, town["claimant"].id)
    assert claimant.is_bound and (claimant.room, claimant.phone) == ("502", "13512340001")
    [row] = await _audits(db, "binding_claim.confirm")
    assert row.actor == f"resident:{town['staff'].id}"
    assert any("已由社区工作人员核实确认" in t for t in await _told(db, claimant.id))
    status, page = await browser.post(f"/console/people/claims/{mine.id}/reject", {"csrf": csrf})
    assert status == 400 and "这条申请已确认，无需再处理。" in page

    # 南山's staff reject theirs.
    await browser.post("/console/logout", {"csrf": csrf})
    await sign_in(phone, browser, "o_other")
    csrf = await browser.csrf("/console/people")
    status, page = await browser.post(f"/console/people/claims/{theirs.id}/reject", {"csrf": csrf})
    assert status == 200 and "已驳回，居民会收到通知。" in page
    async with db.read() as s:
        assert (await s.get(BindingClaim, theirs.id)).status == ClaimStatus.REJECTED
    assert len(await _audits(db, "binding_claim.reject")) == 1


async def test_only_an_admin_sees_and_changes_role_grants_and_reads_the_audit_log(db, phone, browser, town):
    await sign_in(phone, browser, "o_staff")
    csrf = await browser.csrf("/console/people")
    status, page = await browser.post("/console/people/grants/grant",
                                      {"csrf": csrf, "phone": "13912345678", "role": "grid_worker", "scope": "G1"})
    assert status == 403 and "只有管理员可以授予或撤销角色。" in page
    status, page = await browser.get("/console/people/audit")
    assert status == 403 and "只有管理员可以查看审计日志。" in page and 'id="audit"' not in page
    await browser.post("/console/logout", {"csrf": csrf})

    await sign_in(phone, browser, "o_admin")
    status, page = await browser.get("/console/people")
    words = _text(page)
    assert status == 200 and 'id="grants"' in page and "社工小周（137****0000） 社区工作人员 大海阳社区（C1）" in words
    assert "周大爷 135****0002" in words  # the admin runs every community
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    status, page = await browser.post("/console/people/grants/grant",
                                      {"csrf": csrf, "phone": "13912345678", "role": "grid_worker", "scope": "G9"})
    assert status == 400 and "没有编码为 G9 的网格" in page
    status, page = await browser.post("/console/people/grants/grant",
                                      {"csrf": csrf, "phone": "13912345678", "role": "grid_worker", "scope": "g1"})
    assert status == 200 and "已授予角色。" in page and "李阿姨（139****5678） 网格员 第一网格（G1）" in _text(page)
    [row] = await _audits(db, "role_grant")
    assert row.actor == f"resident:{town['admin'].id}" and row.target_id == str(town["volunteer"].id)

    status, page = await browser.post("/console/people/grants/revoke", {
        "csrf": csrf, "resident": str(town["volunteer"].id), "role": "grid_worker", "scope": "G1"})
    assert status == 200 and "已撤销角色。" in page and "李阿姨（139****5678） 网格员" not in _text(page)
    async with db.read() as s:
        grants = (await s.exec(select(RoleGrant).where(RoleGrant.resident_id == town["volunteer"].id))).all()
    assert [g.revoked_at is not None for g in grants] == [True]
    assert len(await _audits(db, "role_revoke")) == 1

    # The audit log: newest first, filtered by action, keyed pages.
    status, page = await browser.get("/console/people/audit")
    actions = re.findall(r"<td>(role_\w+|console\.\w+|resident_lookup)</td>", page)
    assert status == 200 and actions[:2] == ["role_revoke", "role_grant"]
    status, page = await browser.get("/console/people/audit?action=role_")
    assert re.findall(r"<td>(\w+\.?\w*)</td>", page).count("role_grant") == 1 and "console.login" not in page
    for n in range(55):
        async with db.write() as s:
            s.add(AuditLog(at=dt.datetime(2026, 11, 27, tzinfo=dt.UTC), actor="cli:test", action="test.row",
                           target_id=str(n)))
    status, page = await browser.get("/console/people/audit?action=test.")
    assert page.count("<td>test.row</td>") == 50 and 'id="next"' in page
    more = re.search(r'href="(/console/people/audit\?[^"]+)" id="next"', page).group(1).replace("&amp;", "&")
    status, page = await browser.get(more)
    assert status == 200 and page.count("<td>test.row</td>") == 5 and 'id="next"' not in page


async def test_every_form_needs_the_csrf_token(db, phone, browser, town):
    await sign_in(phone, browser, "o_staff")
    forms = [
        ("/console/points/lookup", {"phone": "13912345678"}),
        ("/console/points/redemption", {"code": town["code"], "do": "fulfil"}),
        (f"/console/points/activities/{town['activities']['c1'].id}/confirm", {}),
        (f"/console/projects/{town['projects']['c1'].id}/accept", {}),
        (f"/console/people/claims/{town['claims']['c1'].id}/confirm", {}),
    ]
    for path, data in forms:
        status, page = await browser.post(path, {**data, "csrf": "forged"})
        assert status == 403 and "页面已过期" in page, path
    assert await _audits(db, "resident_lookup") == [] and await _audits(db, "redemption.fulfil") == []
    assert await _audits(db, "activity.confirm") == [] and await _audits(db, "project.accept") == []
    async with db.read() as s:
        assert (await s.get(BindingClaim, town["claims"]["c1"].id)).status == ClaimStatus.PENDING


async def test_the_pages_fit_a_phone_and_a_grid_worker_sees_no_community_records(db, phone, browser, town):
    worker = await make_resident(db, "o_worker", town["d"].buildings["B1"], name="网格员老陈", phone="13500000000")
    await grant(db, worker, Role.GRID_WORKER, town["d"].grids["G1"].id)
    assert (await actor_for(db, worker.id)).communities == set()
    await sign_in(phone, browser, "o_worker")
    for path, empty in (("/console/points", "最近30天没有已开始的活动。"), ("/console/projects", "没有项目。"),
                        ("/console/people", "没有待核实的绑定。")):
        status, page = await browser.get(path)
        assert status == 200 and empty in page and 'name="viewport"' in page, path


# ---------------------------------------------------------------------------------------------- in a real browser



@pytest.mark.slow
async def test_an_admin_works_the_three_pages_in_a_browser(db, phone, bot_server, town, chromium):
    _bot, url = bot_server

    async def enter(page) -> None:
        token = re.search(r"/console/login/([A-Za-z0-9_-]+)", (await phone.text("o_admin", "后台")).text).group(1)
        await page.goto(f"{url}/console/login/{token}")
        await page.click("#enter")
        await page.wait_for_selector("nav")

    office = await chromium.new_context(viewport={"width": 1366, "height": 768})
    page = await office.new_page()
    await enter(page)

    await page.click("nav >> text=积分与居民")
    await page.wait_for_selector("#form-lookup")
    await page.fill("#form-lookup input[name=phone]", "13912345678")
    await page.click("#form-lookup button")
    await page.wait_for_selector("#person-1")
    assert "积分余额 50" in await page.inner_text("#person-1")
    await page.fill("#form-code input[name=code]", town["code"])
    await page.click("#form-code button")
    await page.wait_for_selector("#redemption")
    await page.screenshot(path=ARTIFACTS / "c3-points.png", full_page=True)
    await page.click("#form-fulfil button")
    await page.wait_for_selector("#redemption-done")

    await page.goto(f"{url}/console/points/activities/{town['activities']['c1'].id}")
    await page.click("#form-confirm button")
    await page.wait_for_selector("#done")
    await page.screenshot(path=ARTIFACTS / "c3-activity.png", full_page=True)

    await page.click("text=项目与评议")
    await page.wait_for_selector("#projects")
    await page.screenshot(path=ARTIFACTS / "c3-projects.png", full_page=True)
    await page.click("#projects >> text=老年活动室")
    await page.fill("#form-accept textarea", "现场已核实")
    await page.click("#form-accept button")
    await page.wait_for_selector("#done >> text=已验收通过")
    await page.screenshot(path=ARTIFACTS / "c3-project.png", full_page=True)

    await page.click("text=居民与待核实")
    await page.wait_for_selector("#claims")
    await page.screenshot(path=ARTIFACTS / "c3-people.png", full_page=True)
    await page.click(f"#claim-{town['claims']['c1'].id} >> text=确认")
    await page.wait_for_selector("#done >> text=已确认绑定")
    await page.click("#audit-link")
    await page.wait_for_selector("#audit")
    assert "binding_claim.confirm" in await page.inner_text("#audit")
    await page.screenshot(path=ARTIFACTS / "c3-audit.png", full_page=True)

    # On a phone the pages read in one column, without sideways scrolling of the page itself.
    mobile = await chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    small = await mobile.new_page()
    await enter(small)
    for name, path in (("points", "/points"), ("projects", "/projects"), ("people", "/people")):
        await small.goto(f"{url}/console{path}")
        width = await small.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, (path, width)
        await small.screenshot(path=ARTIFACTS / f"c3-{name}-phone.png", full_page=True)
    await mobile.close()
    await office.close()


async def test_review_tallies_and_survey_scores_show_only_the_persons_communities(db, phone, browser, town, clock):
    d, now = town["d"], clock.now()
    survey, _size = await start_survey(db, per_community=5, seed=7, actor=CLI, now=now)
    async with db.read() as s:
        samples = (await s.exec(select(SurveySample).where(SurveySample.survey_id == survey.id))).all()
    mine = next(x for x in samples if x.community_id == d.communities["C1"].id)
    await answer_survey(db, mine.id, resident_id=mine.resident_id, overall=4, grid_score=5, comment="网格员很负责",
                        now=now)
    async with db.write() as s:
        review = Review(community_id=d.communities["C1"].id, year=2026, status="closed", opens_at=now,
                        closes_at=now, created_by="cli:test", created_at=now, closed_at=now, eligible=40, voters=12)
        s.add(review)
        await s.flush()
        s.add(ReviewItem(review_id=review.id, project_id=town["projects"]["c1"].id, position=1))
        s.add(ReviewTally(review_id=review.id, project_id=town["projects"]["c1"].id, satisfied=8, basic=2,
                          unsatisfied=2))

    await sign_in(phone, browser, "o_staff")
    status, page = await browser.get("/console/projects")
    words = _text(page)
    assert status == 200 and "大海阳社区 2026 年评议 参与 12 / 40 人" in words
    assert "老年活动室 8 2 2 12 83.3%" in words
    assert f"问卷 {survey.id}" in words and "大海阳社区" in words and "4.00 5.00" in words
    assert "南山社区" not in words and "网格员很负责" in words
    await browser.post("/console/logout", {"csrf": await browser.csrf("/console/projects")})

    await sign_in(phone, browser, "o_other")
    words = _text((await browser.get("/console/projects"))[1])
    # 南山 drew nobody (its only resident is staff): its staff see no other community's scores or comments.
    assert "还没有评议。" in words and "还没有问卷结果。" in words and "大海阳社区" not in words
    assert "网格员很负责" not in words


async def _accepted(db, town, clock) -> None:
    """Both communities' projects accepted: each community has one completed project of 2026 to review."""
    for key in ("c1", "c2"):
        await accept_project(db, town["projects"][key].id, actor=CLI, now=clock.now(), note="验收合格")


def _shape(audit: AuditLog) -> tuple:
    """An audit row without whose and which: what chat's and the console's rows must share."""
    return audit.action, audit.actor.split(":")[0], audit.target_type, sorted(json.loads(audit.detail))


async def test_staff_open_and_close_the_year_end_review_as_chat_does(db, phone, browser, town, clock):
    await _accepted(db, town, clock)
    c1 = town["d"].communities["C1"].id
    await sign_in(phone, browser, "o_staff")
    status, page = await browser.get("/console/projects")
    assert f'id="open-review-{c1}-2026"' in page and "2026 年度，1 个已完成项目：老年活动室" in page
    csrf = await browser.csrf("/console/projects")
    form = {"csrf": csrf, "community": str(c1), "year": "2026", "days": "0"}
    status, page = await browser.post("/console/projects/reviews/open", form)
    assert status == 400 and 'id="error">评议天数请在1到60之间。<' in page
    status, page = await browser.post("/console/projects/reviews/open", {**form, "days": "7", "year": "2020"})
    assert status == 400 and "2020年度的评议已不能开启。" in page
    assert await _audits(db, "review.open") == []

    status, page = await browser.post("/console/projects/reviews/open", {**form, "days": "7"})
    assert status == 200 and "评议已开启，已通知本社区已绑定居民。" in page
    async with db.read() as s:
        review = (await s.exec(select(Review).where(Review.community_id == c1))).one()
    assert review.status == "open" and review.closes_at == dt.datetime(2026, 12, 4, 18, 0, tzinfo=clock.tz)
    assert any("2026年度服务项目评议" in t for t in await _told(db, town["volunteer"].id))
    assert f'id="openable-{c1}">大海阳社区2026年度的评议正在进行' in page and "提前结束评议" in page

    status, page = await browser.post(f"/console/projects/reviews/{review.id}/close", {"csrf": csrf})
    assert status == 400 and "尚未到期，需确认后才能提前结束。" in page  # chat asks twice too
    status, page = await browser.post(f"/console/projects/reviews/{review.id}/close", {"csrf": csrf, "early": "1"})
    assert status == 200 and "评议已结束，结果已通知参评居民。" in page and "参与 0 /" in page
    async with db.read() as s:
        assert (await s.get(Review, review.id)).status == "closed"

    # The same two steps in chat, by 南山's staff for their community: the audit rows have the same shape.
    assert "回复 1 确认开启" in (await phone.text("o_other", "开启评议 7")).text
    assert "评议已开启" in (await phone.text("o_other", "1")).text
    await phone.text("o_other", "结束评议")
    assert "评议已提前结束" in (await phone.text("o_other", "1")).text
    for action in ("review.open", "review.close"):
        console, chat = await _audits(db, action)
        assert console.actor == f"resident:{town['staff'].id}" and chat.actor == f"resident:{town['other'].id}"
        assert _shape(console) == _shape(chat)
    console, chat = await _audits(db, "review.close")
    assert json.loads(console.detail)["early"] is True and json.loads(chat.detail)["early"] is True


async def test_another_communitys_review_is_404_and_review_forms_need_the_token(db, phone, browser, town, clock):
    await _accepted(db, town, clock)
    c1 = town["d"].communities["C1"].id
    review = await open_review(db, community_id=c1, year=2026, closes_at=clock.now() + dt.timedelta(days=3),
                               actor=CLI, now=clock.now())
    c2 = town["d"].communities["C2"].id
    await sign_in(phone, browser, "o_staff")
    for token in ({}, {"csrf": "forged"}):  # with the page's token this would close it
        status, page = await browser.post(f"/console/projects/reviews/{review.review.id}/close",
                                          {"early": "1", **token})
        assert status == 403 and "页面已过期" in page
    await browser.post("/console/logout", {"csrf": await browser.csrf("/console/projects")})

    await sign_in(phone, browser, "o_other")
    csrf = await browser.csrf("/console/projects")
    _status, page = await browser.get("/console/projects")
    assert f'id="open-review-{c1}' not in page and "提前结束评议" not in page and f'id="open-review-{c2}-2026"' in page
    for token in ({}, {"csrf": "forged"}):  # with the page's token this would open 南山's
        status, page = await browser.post("/console/projects/reviews/open",
                                          {"community": str(c2), "year": "2026", "days": "7", **token})
        assert status == 403 and "页面已过期" in page
    status, _page = await browser.post("/console/projects/reviews/open",
                                       {"csrf": csrf, "community": str(c1), "year": "2026", "days": "7"})
    assert status == 404
    status, _page = await browser.post(f"/console/projects/reviews/{review.review.id}/close",
                                       {"csrf": csrf, "early": "1"})
    assert status == 404
    async with db.read() as s:
        assert (await s.get(Review, review.review.id)).status == "open"
        assert (await s.exec(select(Review).where(Review.community_id == c2))).first() is None
    assert await _audits(db, "review.close") == [] and len(await _audits(db, "review.open")) == 1
