"""The staff console (bot/console/): signing in by a single-use link from chat, the session and its CSRF token,
what a person may see (another community's need is 404), every staff action as a form through the same storage
operation as chat (its audit row, the resident's push), and the ledger with its filters and exports."""

from __future__ import annotations

import datetime as dt
import io
import json
import re

import aiohttp
import openpyxl
import pytest
from sqlmodel import select

from bot.cli import build_parser
from bot.cli_console import link_text
from bot.config import Settings
from bot.console import COOKIE, pages
from storage import console_auth
from storage.actor import Actor, actor_for
from storage.console_auth import ConsoleAuthError, issue_link
from storage.grants import revoke_role
from storage.needs import (
    Attachments,
    LedgerFilter,
    MediaRef,
    NeedStatus,
    fetch_due_media,
    file_on_behalf,
    find_need,
    ledger,
    need_media,
    queries,
    report_need,
    triage_need,
)
from storage.policy import Can, allows
from storage.roles import AuditLog, Role
from tests.conftest import start_bot
from tests.console_client import LINK, Browser, sign_in
from tests.factories import grant, make_district, make_resident

PHONE = "13912345678"


@pytest.fixture
def settings(fake_wechat, tmp_path) -> Settings:
    return Settings(wechat_token="stewardtest", wechat_api_base=fake_wechat.base_url, media_dir=tmp_path / "media")


@pytest.fixture
async def town(db, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"], room="301", phone=PHONE, name="李阿姨")
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    other = await make_resident(db, "o_other", d.buildings["B4"], name="南山小王", phone="13600000000")
    await grant(db, other, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    worker = await make_resident(db, "o_worker", d.buildings["B1"], name="网格员老陈", phone="13500000000")
    await grant(db, worker, Role.GRID_WORKER, d.grids["G1"].id)
    need = await report_need(db, resident.id, "楼道灯坏了，好几天了", "JZ-05", clock.now())
    return {"d": d, "resident": resident, "staff": staff, "other": other, "worker": worker, "need": need}


async def _audits(db, prefix: str) -> list[AuditLog]:
    async with db.read() as s:
        rows = await s.exec(select(AuditLog).where(AuditLog.action.startswith(prefix)).order_by(AuditLog.id))
        return list(rows.all())


async def test_staff_get_a_single_use_link_in_chat_and_sign_in_with_it(db, phone, browser, town):
    reply = (await phone.text("o_staff", "后台")).text
    assert reply.startswith("管理后台登录链接（10分钟内有效，只能用一次，请勿转发）：\nhttp://")
    token = LINK.search(reply).group(1)

    status, page = await browser.get(f"/console/login/{token}")  # a preview opening the link spends nothing
    assert status == 200 and 'id="enter"' in page
    async with browser.http.post(f"{browser.base}/console/login/{token}", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/console/"
        cookie = r.headers["Set-Cookie"]
    assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie

    status, page = await browser.get("/console/")
    assert status == 200 and "社工小周" in page and 'id="count-triage">1<' in page
    assert town["need"].ticket in page

    status, page = await browser.post(f"/console/login/{token}")  # used once: never again
    assert status == 403 and "这个登录链接无效或已用过" in page
    assert [a.action for a in await _audits(db, "console.")] == ["console.link", "console.login"]


async def test_only_staff_get_a_link(db, phone, town):
    assert "/console/login/" not in (await phone.text("o_res", "后台")).text
    leader = await make_resident(db, "o_leader", town["d"].buildings["B1"])
    await grant(db, leader, Role.BUILDING_LEADER, town["d"].buildings["B1"].id)
    with pytest.raises(ConsoleAuthError, match="只对社区、网格、区级工作人员和承办单位成员开放"):
        await issue_link(db, await actor_for(db, leader.id), leader.id, dt.datetime.now(dt.UTC))
    assert await _audits(db, "console.") == []


async def test_an_expired_or_unknown_link_is_refused(db, browser, clock, town):
    token = await issue_link(db, await actor_for(db, town["staff"].id), town["staff"].id, clock.now())
    clock.advance(minutes=11)
    status, page = await browser.post(f"/console/login/{token}")
    assert status == 403 and "已过期（10分钟内有效）" in page
    status, page = await browser.post("/console/login/not-a-real-token-at-all")
    assert status == 403 and "无效或已用过" in page
    status, page = await browser.get("/console/ledger")
    assert "在微信里给公众号发送「后台」" in page  # still signed out: sent to the sign-in page


async def test_link_use_is_rate_limited_per_address(browser, town):
    tries = console_auth.LOGIN_TRIES
    statuses = [(await browser.post(f"/console/login/guess{n:04d}"))[0] for n in range(tries + 1)]
    assert statuses == [403] * tries + [429]


async def test_a_form_without_the_csrf_token_is_refused(db, phone, browser, town):
    await sign_in(phone, browser, "o_staff")
    ticket = town["need"].ticket
    for data in ({"tier": "A"}, {"tier": "A", "csrf": "forged"}):
        status, page = await browser.post(f"/console/needs/{ticket}/triage", data)
        assert status == 403 and "页面已过期" in page
    status, _page = await browser.post("/console/logout", {})
    assert status == 403  # logging out needs it too
    assert (await find_need(db, ticket)).status == NeedStatus.REPORTED.value


async def test_another_communitys_need_is_404_and_cannot_be_acted_on(db, phone, browser, town):
    await sign_in(phone, browser, "o_other")
    ticket = town["need"].ticket
    status, page = await browser.get(f"/console/needs/{ticket}")
    assert status == 404 and "没有这个页面，或您无权查看" in page and "楼道灯" not in page
    assert (await browser.get("/console/needs/20991231-0001"))[0] == 404  # the same answer as for none at all
    csrf = await browser.csrf()
    status, _page = await browser.post(f"/console/needs/{ticket}/triage", {"csrf": csrf, "tier": "A"})
    assert status == 404
    _status, ledger_page = await browser.get("/console/ledger")
    assert ticket not in ledger_page and "共 0 条" in ledger_page
    assert (await find_need(db, ticket)).status == NeedStatus.REPORTED.value


async def test_every_staff_action_is_the_chat_operation_with_its_audit_and_push(
    db, phone, browser, bot_server, fake_wechat, clock, town
):
    bot, _url = bot_server
    await sign_in(phone, browser, "o_staff")
    ticket, staff = town["need"].ticket, town["staff"]
    csrf = await browser.csrf()

    status, page = await browser.get(f"/console/needs/{ticket}")
    assert status == 200 and "楼道灯坏了，好几天了" in page and "139****5678" in page and PHONE not in page
    status, page = await browser.post(f"/console/needs/{ticket}/phone", {"csrf": csrf})
    assert status == 200 and f'<b id="phone">{PHONE}</b>' in page

    steps = [
        ("reclassify", {"item": "JZ-05"}, "已改类。"),
        ("triage", {"tier": "B"}, "已分流定级。"),
        ("assign", {"person": str(town["worker"].id)}, "已指派。"),
        ("progress", {"text": "已联系物业，明天上午维修。"}, "已登记进展"),
        ("resolve", {"text": "已更换楼道灯。"}, "已办结"),
    ]
    for action, form, said in steps:
        status, page = await browser.post(f"/console/needs/{ticket}/{action}", {"csrf": csrf, **form})
        assert status == 200 and said in page, (action, page[:300])
    need = await find_need(db, ticket)
    assert need.status == NeedStatus.RESOLVED.value and need.assignee_id == town["worker"].id
    actions = [(a.actor, a.action) for a in await _audits(db, "need.")]
    assert actions == [(f"resident:{staff.id}", a) for a in (
        "need.reveal_phone", "need.reclassify", "need.triage", "need.assign", "need.progress", "need.resolve")]

    await bot.services["sender"].drain()  # what the scheduler's prompt drain does after the commit
    texts = fake_wechat.texts_to("o_res")
    assert any("已联系物业，明天上午维修" in t for t in texts)
    assert any("已更换楼道灯" in t for t in texts)
    assert any("【新派单】" in t for t in fake_wechat.texts_to("o_worker"))
    _status, page = await browser.get(f"/console/needs/{ticket}")
    # Residents read a role in the timeline; staff see who it was.
    assert "社区工作人员·社工小周" in page and "居民·李阿姨" in page

    # A refused action reads the operation's own sentence, on the same page, with nothing done.
    status, page = await browser.post(f"/console/needs/{ticket}/progress", {"csrf": csrf, "text": "再看看"})
    assert status == 400 and "不能登记进展" in page


async def test_reject_merge_and_escalate_through_their_forms(db, phone, browser, clock, town):
    d, resident = town["d"], town["resident"]
    twin = await report_need(db, resident.id, "楼道灯又坏了，晚上很黑", "JZ-05", clock.now())
    third = await report_need(db, resident.id, "想咨询社保卡补办", "JZ-05", clock.now())
    fourth = await report_need(db, resident.id, "路面塌陷需要区里处理", "JZ-05", clock.now())
    district = await make_resident(db, "o_district", d.buildings["B4"], name="住建局小刘", phone="13400000000")
    await grant(db, district, Role.DISTRICT_STAFF, d.departments["D-JS"].id)
    await sign_in(phone, browser, "o_staff")
    csrf = await browser.csrf()

    status, page = await browser.post(f"/console/needs/{twin.ticket}/merge", {"csrf": csrf,
                                                                              "target": town["need"].ticket})
    assert status == 200 and "已合并。" in page
    status, page = await browser.post(f"/console/needs/{third.ticket}/reject", {"csrf": csrf, "text": "x"})
    assert status == 400 and "驳回需要写明理由" in page
    status, page = await browser.post(f"/console/needs/{third.ticket}/reject",
                                      {"csrf": csrf, "text": "请到区社保中心办理。"})
    assert status == 200 and "已驳回" in page
    status, page = await browser.post(f"/console/needs/{fourth.ticket}/escalate",
                                      {"csrf": csrf, "department": d.departments["D-JS"].code})
    assert status == 200 and "已上报区级部门。" in page
    states = [(await find_need(db, n.ticket)).status for n in (twin, third, fourth)]
    assert states == ["merged", "rejected", "escalated"]
    assert (await find_need(db, town["need"].ticket)).supporters == 1  # the same resident reported both: one person


async def test_a_revoked_role_or_logout_ends_the_session(db, phone, browser, clock, town):
    await sign_in(phone, browser, "o_staff")
    csrf = await browser.csrf()
    assert (await browser.post("/console/logout", {"csrf": csrf}))[1].count("在微信里给公众号发送「后台」") == 1
    assert "在微信里给公众号发送「后台」" in (await browser.get("/console/ledger"))[1]
    assert [a.action for a in await _audits(db, "console.")][-1] == "console.logout"

    await sign_in(phone, browser, "o_staff")
    await revoke_role(db, town["staff"].id, Role.COMMUNITY_STAFF, "C1", Actor.operator("cli:test"), clock.now())
    status, page = await browser.get(f"/console/needs/{town['need'].ticket}")
    assert status == 200 and "在微信里给公众号发送「后台」" in page and "楼道灯" not in page


async def test_the_ledger_filters_searches_and_pages_by_keyset(db, phone, browser, clock, town):
    d, resident = town["d"], town["resident"]
    leader = await make_resident(db, "o_leader", d.buildings["B2"])
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B2"].id)
    filed = await file_on_behalf(db, await actor_for(db, leader.id), "2号楼门禁坏了", "JZ-05", clock.now(),
                                 building_id=d.buildings["B2"].id, room="202", contact_name="王大爷",
                                 contact_phone="13311112222")
    clock.advance(days=3)
    newer = await report_need(db, resident.id, "小区垃圾没人清运", "JZ-01", clock.now())
    await sign_in(phone, browser, "o_staff")

    _s, page = await browser.get("/console/ledger")
    assert "共 3 条" in page and page.index(newer.ticket) < page.index(town["need"].ticket)
    _s, page = await browser.get("/console/ledger?q=门禁")
    assert "共 1 条" in page and filed.ticket in page
    _s, page = await browser.get("/console/ledger?source=proxy")
    assert "共 1 条" in page and filed.ticket in page
    _s, page = await browser.get(f"/console/ledger?building={d.buildings['B2'].id}")
    assert "共 1 条" in page and filed.ticket in page
    _s, page = await browser.get("/console/ledger?item=JZ-01&sort=old")
    assert "共 1 条" in page and newer.ticket in page
    day = clock.now().date().isoformat()
    _s, page = await browser.get(f"/console/ledger?from={day}&to={day}")
    assert "共 1 条" in page and newer.ticket in page
    _s, page = await browser.get("/console/ledger?overdue=1")  # three days on, the first two missed first response
    assert "共 2 条" in page and newer.ticket not in page

    me = await actor_for(db, town["staff"].id)
    first = await ledger(db, me, LedgerFilter(), size=2)
    second = await ledger(db, me, LedgerFilter(), after=first.next_after, size=2)
    assert [n.ticket for n in first.needs + second.needs] == [newer.ticket, filed.ticket, town["need"].ticket]
    assert second.next_after is None and first.total == 3
    _s, page = await browser.get("/console/ledger?q=%25")  # a LIKE wildcard is searched for, not obeyed
    assert "共 0 条" in page


async def test_the_ledger_exports_to_xlsx_and_csv_with_cells_defused(db, phone, browser, clock, town):
    await report_need(db, town["resident"].id, "=HYPERLINK(\"http://x\",\"点我\")", "JZ-05", clock.now())
    await sign_in(phone, browser, "o_staff")

    status, body, headers = await browser.raw("/console/ledger.xlsx?item=JZ-05")
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    sheet = openpyxl.load_workbook(io.BytesIO(body)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:3] == ("编号", "状态", "提交时间") and len(rows) == 3
    texts = {r[9] for r in rows[1:]}
    assert "'=HYPERLINK(\"http://x\",\"点我\")" in texts and "楼道灯坏了，好几天了" in texts
    assert all(r[11] == "139****5678" for r in rows[1:])  # phones stay masked in an export

    status, body, headers = await browser.raw("/console/ledger.csv?q=楼道灯")
    assert status == 200 and body.startswith("\ufeff".encode()) and "text/csv" in headers["Content-Type"]
    text = body.decode("utf-8-sig")
    assert text.splitlines()[0].startswith("编号,状态,提交时间") and len(text.strip().splitlines()) == 2
    exports = await _audits(db, "console.export")
    assert [(a.target_id, a.actor) for a in exports] == [("xlsx", f"resident:{town['staff'].id}"),
                                                         ("csv", f"resident:{town['staff'].id}")]


async def test_an_export_read_in_many_batches_has_every_row_once_in_order(db, phone, browser, clock, town,
                                                                            monkeypatch):
    """The export reads the database a batch at a time by keyset (ledger_batches): with batches of 3, eight needs
    (some created in the same second: the id breaks the tie) come out once each, in the ledger's order."""
    for n in range(7):
        await report_need(db, town["resident"].id, f"第{n}号诉求：路灯不亮", "JZ-05", clock.now())
        if n % 2:
            clock.advance(minutes=1)
    monkeypatch.setattr(queries, "LEDGER_EXPORT_BATCH", 3)
    batches: list[int] = []

    async def counted(*args, **kwargs):
        async for batch in queries.ledger_batches(*args, **kwargs):
            batches.append(len(batch))
            yield batch

    monkeypatch.setattr(pages, "ledger_batches", counted)
    await sign_in(phone, browser, "o_staff")
    me = await actor_for(db, town["staff"].id)
    for sort in ("new", "old"):
        expected = [n.ticket for n in (await ledger(db, me, LedgerFilter(sort=sort))).needs]
        assert len(expected) == 8

        status, body, _h = await browser.raw(f"/console/ledger.csv?sort={sort}")
        lines = body.decode("utf-8-sig").strip().splitlines()
        assert status == 200 and lines[0].startswith("编号,") and [x.split(",")[0] for x in lines[1:]] == expected

        status, body, _h = await browser.raw(f"/console/ledger.xlsx?sort={sort}")
        rows = list(openpyxl.load_workbook(io.BytesIO(body)).active.iter_rows(values_only=True))
        assert status == 200 and rows[0][0] == "编号" and [r[0] for r in rows[1:]] == expected
    assert batches == [3, 3, 2] * 4  # four exports, each three reads
    assert [json.loads(a.detail)["count"] for a in await _audits(db, "console.export")] == [8, 8, 8, 8]

    # Past the cap the file stops there and says so; the audit row counts what was handed out.
    monkeypatch.setattr(pages, "LEDGER_EXPORT_LIMIT", 5)
    newest = [n.ticket for n in (await ledger(db, me, LedgerFilter())).needs][:5]
    _s, body, _h = await browser.raw("/console/ledger.csv")
    lines = body.decode("utf-8-sig").strip().splitlines()
    assert [x.split(",")[0] for x in lines[1:6]] == newest and lines[6].startswith("已截断") and len(lines) == 7
    _s, body, _h = await browser.raw("/console/ledger.xlsx")
    rows = list(openpyxl.load_workbook(io.BytesIO(body)).active.iter_rows(values_only=True))
    assert [r[0] for r in rows[1:6]] == newest and rows[6][0].startswith("已截断") and len(rows) == 7
    assert [json.loads(a.detail)["count"] for a in await _audits(db, "console.export")][-2:] == [5, 5]


async def test_pages_carry_security_headers_and_local_assets(phone, browser, town):
    await sign_in(phone, browser, "o_staff")
    async with browser.http.get(browser.base + "/console/ledger") as r:
        assert r.headers["X-Frame-Options"] == "DENY" and "default-src 'self'" in r.headers["Content-Security-Policy"]
        page = await r.text()
    assert "http://" not in re.sub(r'href="https://uri\.amap\.com[^"]*"', "", page.split("<main>")[0])
    status, css, _h = await browser.raw("/console/static/console.css")
    assert status == 200 and b".top" in css


async def test_the_console_can_be_switched_off(settings, db, kv, clock):
    bot, runner, url = await start_bot(settings.replace(console=False), db, kv, clock)
    try:
        async with aiohttp.ClientSession() as http, http.get(url + "/console/signin") as r:
            assert r.status == 404
    finally:
        await bot.wechat.close()
        await runner.cleanup()


async def test_an_admin_prints_a_link_at_the_command_line(db, clock, town):
    text = await link_text(db, "o_staff", "https://steward.example.gov.cn", clock.now())
    assert re.match(r"https://steward\.example\.gov\.cn/console/login/[A-Za-z0-9_-]{30,}\n（10分钟内有效", text)
    with pytest.raises(ConsoleAuthError, match="只对社区、网格、区级工作人员和承办单位成员开放"):
        await link_text(db, "o_res", "https://x", clock.now())
    args = build_parser().parse_args(["console", "link", "o_staff"])
    assert args.openid == "o_staff" and args.func.__name__ == "cmd_console_link"
    assert build_parser().parse_args(["console"]).func.__name__ == "cmd_console"


async def test_a_grid_worker_sees_the_grids_needs_but_does_not_manage_them(phone, browser, town):
    await sign_in(phone, browser, "o_worker")
    status, page = await browser.get(f"/console/needs/{town['need'].ticket}")
    assert status == 200 and "楼道灯坏了" in page
    assert 'id="form-triage"' not in page and 'id="reveal"' not in page  # seeing is not managing
    _s, page = await browser.get("/console/ledger")
    assert "共 1 条" in page


async def test_a_needs_file_shows_its_photos_and_place_to_those_who_may_see_it(
    db, phone, browser, bot_server, fake_wechat, clock, town
):
    bot, _url = bot_server
    jpeg = b"\xff\xd8\xff\xe0" + b"photo" * 40
    fake_wechat.add_media("m-1", jpeg)
    need = await report_need(db, town["resident"].id, "路灯不亮", "JZ-05", clock.now(), Attachments(
        latitude=37.53, longitude=121.39, location_label="3单元门口", media=(MediaRef("image", "m-1", clock.now()),)))

    async def fetch(media_id: str) -> tuple[bytes, str]:
        return await bot.wechat.get_media(media_id)

    assert await fetch_due_media(db, bot.services["media"], fetch, clock.now()) == 1
    token = (await need_media(db, need.id))[0].token
    photo = f"/console/needs/{need.ticket}/media/{token}"

    await sign_in(phone, browser, "o_staff")
    _s, page = await browser.get(f"/console/needs/{need.ticket}")
    assert f'<img src="{photo}"' in page and "3单元门口 37.53000, 121.39000" in page
    assert "uri.amap.com/marker?position=121.39,37.53" in page
    status, body, headers = await browser.raw(photo)
    assert status == 200 and body == jpeg and headers["Content-Type"] == "image/jpeg"
    assert (await browser.raw(f"/console/needs/{town['need'].ticket}/media/{token}"))[0] == 404  # not its need

    south = Browser(browser.base)
    try:
        await sign_in(phone, south, "o_other")
        assert (await south.raw(photo))[0] == 404
    finally:
        await south.close()


async def test_the_ledgers_scope_is_exactly_the_policys_see_need(db, clock, town):
    d, resident = town["d"], town["resident"]
    leader = await make_resident(db, "o_leader", d.buildings["B2"])
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B2"].id)
    district = await make_resident(db, "o_district", d.buildings["B4"])
    await grant(db, district, Role.DISTRICT_STAFF, d.departments["D-JS"].id)
    south = await make_resident(db, "o_south", d.buildings["B4"], phone="13311110000")
    await report_need(db, south.id, "南山小区路灯不亮", "JZ-05", clock.now())
    await file_on_behalf(db, await actor_for(db, leader.id), "2号楼门禁坏了", "JZ-05", clock.now(),
                         building_id=d.buildings["B2"].id, contact_name="王大爷", contact_phone="13311112222")
    await report_need(db, resident.id, "3号楼外墙脱落", "JZ-05", clock.now())
    everything = (await ledger(db, Actor.operator("cli:test"), LedgerFilter(), size=100)).needs
    assert len(everything) == 4
    people = [town[k] for k in ("resident", "staff", "other", "worker")] + [leader, district, south]
    for person in people:
        me = await actor_for(db, person.id)
        shown = {n.ticket for n in (await ledger(db, me, LedgerFilter(), size=100)).needs}
        assert shown == {n.ticket for n in everything if allows(me, Can.SEE_NEED, n)}, person.openid


async def test_a_triage_form_opened_before_a_colleague_triaged_is_refused_not_applied(db, phone, browser, clock, town):
    ticket = town["need"].ticket
    await sign_in(phone, browser, "o_staff")
    _status, page = await browser.get(f"/console/needs/{ticket}")
    assert 'name="first" value="1"' in page  # opened while it waits for triage
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    colleague = await actor_for(db, town["staff"].id)
    await triage_need(db, colleague, ticket, "A", clock.now(), first=True)  # in chat, a moment earlier
    status, page = await browser.post(f"/console/needs/{ticket}/triage", {"csrf": csrf, "tier": "C", "first": "1"})
    assert status == 400 and "已被分流" in page
    assert (await find_need(db, ticket)).tier == "A"  # the colleague's decision stands
    _status, page = await browser.get(f"/console/needs/{ticket}")
    assert 'name="first"' not in page  # re-tiering a triaged need stays possible on purpose
    status, page = await browser.post(f"/console/needs/{ticket}/triage", {"csrf": csrf, "tier": "C"})
    assert status == 200 and (await find_need(db, ticket)).tier == "C"
