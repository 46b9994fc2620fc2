"""The console's 阳光17议 and 广播 pages (bot/console/c2.py): a community's sessions with bookings, waitlist and a
printable sign-in sheet (names and phones masked), the agenda draft, outcomes and minutes, moving and cancelling
with the notices' delivery counts; composing a broadcast to an audience chat offers, its exact count, confirming,
its progress and stopping it. Each form goes through the storage operation chat uses (its effect, its audit row);
another community's session and another person's broadcast are 404; a form without the CSRF token is refused.
A browser story (slow) opens the pages and saves screenshots to test-artifacts/console/c2-*.png."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from bot.config import Settings
from storage import broadcast as bc
from storage import consultation as cs
from storage.actor import Actor, actor_for
from storage.roles import AuditLog, Role
from tests.browser import ARTIFACTS
from tests.console_client import Browser, sign_in
from tests.factories import grant, make_district, make_resident

TZ = ZoneInfo("Asia/Shanghai")
REGISTRATION_OPEN = dt.datetime(2026, 12, 10, 10, 0, tzinfo=TZ)
MEETING = dt.datetime(2026, 12, 17, 14, 30, tzinfo=TZ)


@pytest.fixture
def settings(fake_wechat, tmp_path) -> Settings:
    return Settings(wechat_token="stewardtest", wechat_api_base=fake_wechat.base_url, media_dir=tmp_path / "media")


@pytest.fixture
async def town(db, clock):
    """C1's December session with two seats: 李阿姨 and 王叔 booked, 赵大爷 waiting; a topic from 李阿姨.
    C2 has its own session and staff."""
    d = await make_district(db)
    c1, c2 = d.communities["C1"].id, d.communities["C2"].id
    operator = Actor.operator("cli:test")
    await cs.set_defaults(db, c1, clock.now(), operator, capacity=12, reserved_seats=10, venue="大海阳社区党群服务中心")
    await cs.set_defaults(db, c2, clock.now(), operator, venue="南山社区活动室")
    assert await cs.create_upcoming_sessions(db, clock.now()) == 2
    session = next(s for s in await cs.list_sessions(db, c1))
    south = next(s for s in await cs.list_sessions(db, c2))
    clock.set(REGISTRATION_OPEN)
    li = await make_resident(db, "o_li", d.buildings["B1"], room="301", phone="13912345678", name="李阿姨")
    wang = await make_resident(db, "o_wang", d.buildings["B2"], room="502", phone="13812345678", name="王叔")
    zhao = await make_resident(db, "o_zhao", d.buildings["B3"], room="101", phone="13712345678", name="赵大爷")
    for resident in (li, wang, zhao):
        await cs.book_seat(db, session.id, resident, clock.now())
    topic = await cs.propose_topic(db, session.id, li, "小区停车位不够，晚上乱停", clock.now())
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, c1)
    other = await make_resident(db, "o_other", d.buildings["B4"], name="南山小王", phone="13600000000")
    await grant(db, other, Role.COMMUNITY_STAFF, c2)
    return {"d": d, "session": session, "south": south, "topic": topic, "li": li, "staff": staff, "other": other}


async def _audits(db, action: str) -> list[AuditLog]:
    async with db.read() as s:
        return list((await s.exec(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id))).all())


def _rows(page: str, table_id: str) -> list[list[str]]:
    body = re.search(rf'<table[^>]*id="{table_id}">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


# ---------------------------------------------------------------------------------------------- 阳光17议


async def test_sessions_bookings_waitlist_and_the_printable_sign_in_sheet(db, phone, browser, town):
    await sign_in(phone, browser, "o_staff")
    status, page = await browser.get("/console/consultation")
    assert status == 200 and 'class="on">阳光17议<' in page
    assert _rows(page, "sessions-upcoming") == [["12月17日（周四）14:30", "大海阳社区", "大海阳社区党群服务中心",
                                                 "待召开", "2 / 2", "1"]]
    assert "南山社区" not in page  # another community's session is not listed

    sid = town["session"].id
    status, page = await browser.get(f"/console/consultation/{sid}")
    assert status == 200 and 'id="counts">已预约 2，候补 1，余 0<' in page
    assert _rows(page, "booked") == [["1", "李**", "139****5678", "301", "—"], ["2", "王*", "138****5678", "502", "—"]]
    assert [r[:3] for r in _rows(page, "waiting")] == [["1", "赵**", "137****5678"]]
    assert "13912345678" not in page and "李阿姨" not in page
    assert _rows(page, "topics") == [["小区停车位不够，晚上乱停", "居民提议", "", "", ""]]
    assert 'id="minutes-why">议事12月17日（周四）14:30才开始，开会后才能登记议题结果和会议纪要。<' in page

    status, sheet = await browser.get(f"/console/consultation/{sid}/sheet")
    assert status == 200 and "大海阳社区阳光17议签到表" in sheet and '<th class="sign">签名</th>' in sheet
    rows = _rows(sheet, "signin")
    assert rows[:2] == [["1", "李**", "139****5678", "301", ""], ["2", "王*", "138****5678", "502", ""]]
    assert [r[0] for r in rows[2:]] == [str(n) for n in range(3, 13)]  # blank rows for the ten reserved seats
    assert _rows(sheet, "signin-waiting")[0][:2] == ["1", "赵**"]
    _status, css = await browser.get("/console/static/console.css")
    assert "@media print" in css and ".top, .noprint { display: none !important; }" in css


async def test_agenda_draft_outcomes_and_minutes_as_chat_does_them(db, phone, browser, clock, town):
    await sign_in(phone, browser, "o_staff")
    sid, topic = town["session"].id, town["topic"]
    status, page = await browser.get(f"/console/consultation/{sid}")
    assert f'value="t{topic.id}"> 小区停车位不够，晚上乱停（1人·居民提议）' in page
    csrf = await browser.csrf(f"/console/consultation/{sid}")

    status, page = await browser.post(f"/console/consultation/{sid}/agenda", {"csrf": csrf})
    assert status == 400 and 'id="error">请勾选要列入议程的议题。<' in page
    status, page = await browser.post(f"/console/consultation/{sid}/agenda", {"csrf": csrf, "pick": f"t{topic.id}"})
    assert status == 200 and "已列入议程，居民回复「议事」即可看到。" in page
    assert _rows(page, "topics")[0][3] == "已列入"
    assert [a.actor for a in await _audits(db, "consultation.agenda")] == [f"resident:{town['staff'].id}"]

    form = {"csrf": csrf, "topic": str(topic.id), "outcome": cs.Outcome.DECLINED, "note": ""}
    status, page = await browser.post(f"/console/consultation/{sid}/outcome", form)  # before the meeting
    assert status == 400 and "开会后才能登记议题结果和会议纪要" in page

    clock.set(MEETING + dt.timedelta(hours=2))
    status, page = await browser.post(f"/console/consultation/{sid}/outcome", form)
    assert status == 400 and 'id="error">不予采纳时请说明理由。<' in page
    form.update(outcome=cs.Outcome.ACCEPTED, note="列入明年停车改造")
    status, page = await browser.post(f"/console/consultation/{sid}/outcome", form)
    assert status == 200 and "已登记议题结果。" in page
    assert _rows(page, "topics")[0][4] == "立项为服务项目列入明年停车改造"
    assert len(await _audits(db, "consultation.outcome")) == 1

    status, page = await browser.post(f"/console/consultation/{sid}/minutes", {"csrf": csrf, "text": "太短"})
    assert status == 400 and "纪要请写得完整一些（至少10个字）。" in page
    minutes = "一、停车问题立项，由物业牵头，明年3月前完成划线。"
    status, page = await browser.post(f"/console/consultation/{sid}/minutes", {"csrf": csrf, "text": minutes})
    assert status == 200 and "纪要已发布，将发给所有预约居民；1位提议人会收到各自议题的结果。" in page
    assert f'id="minutes">{minutes}<' in page and "已召开（纪要已发布）" in page
    assert (await cs.get_session(db, sid)).status == cs.SessionStatus.HELD
    assert len(await _audits(db, "consultation.minutes")) == 1


async def test_move_and_cancel_tell_everyone_and_show_the_counts(db, phone, browser, clock, town):
    await sign_in(phone, browser, "o_staff")
    sid = town["session"].id
    csrf = await browser.csrf(f"/console/consultation/{sid}")
    status, page = await browser.post(f"/console/consultation/{sid}/move", {"csrf": csrf, "when": "2026-12-01T14:30"})
    assert status == 400 and 'id="error">新的时间必须在现在之后。<' in page

    status, page = await browser.post(f"/console/consultation/{sid}/move", {"csrf": csrf, "when": "2026-12-18T15:00"})
    assert status == 200 and "已改期到12月18日（周五）15:00。" in page
    told = re.search(r'id="told">(.*?)</p>', page).group(1)
    assert told.startswith("已通知 3 位预约和候补的居民：")  # the two booked and the one waiting
    moved = await cs.get_session(db, sid)
    assert moved.starts_at == dt.datetime(2026, 12, 18, 15, 0, tzinfo=TZ)
    assert len(await _audits(db, "consultation.move")) == 1

    status, page = await browser.post(f"/console/consultation/{sid}/cancel", {"csrf": csrf, "reason": " "})
    assert status == 400 and "请说明取消的原因。" in page
    status, page = await browser.post(f"/console/consultation/{sid}/cancel", {"csrf": csrf, "reason": "会议室维修"})
    assert status == 200 and "议事已取消。" in page and "已通知 3 位预约和候补的居民" in page
    assert "取消原因</dt><dd>会议室维修<" in page and 'id="form-move"' not in page
    assert (await cs.get_session(db, sid)).status == cs.SessionStatus.CANCELLED
    [audit] = await _audits(db, "consultation.cancel")
    assert "会议室维修" in audit.detail


async def test_another_communitys_session_is_404_and_forms_need_the_token(db, phone, browser, town):
    await sign_in(phone, browser, "o_other")
    sid = town["session"].id
    csrf = await browser.csrf("/console/consultation")
    for path in (f"/console/consultation/{sid}", f"/console/consultation/{sid}/sheet", "/console/consultation/99999"):
        status, _page = await browser.get(path)
        assert status == 404
    status, _page = await browser.post(f"/console/consultation/{sid}/cancel", {"csrf": csrf, "reason": "不该能取消"})
    assert status == 404
    status, page = await browser.get(f"/console/consultation/{town['south'].id}")
    assert status == 200 and "南山社区活动室" in page

    for data in ({"reason": "没有令牌"}, {"reason": "伪造令牌", "csrf": "forged"}):
        status, page = await browser.post(f"/console/consultation/{town['south'].id}/cancel", data)
        assert status == 403 and "页面已过期" in page
    assert (await cs.get_session(db, sid)).status == cs.SessionStatus.SCHEDULED
    assert (await cs.get_session(db, town["south"].id)).status == cs.SessionStatus.SCHEDULED
    assert await _audits(db, "consultation.cancel") == []


async def _booking(db, session_id: int, resident_id: int) -> cs.Booking:
    return next(b for b, r in await cs.session_roster(db, session_id) if r.id == resident_id)


async def test_check_in_on_the_session_page_as_chats_check_in(db, phone, browser, clock, town):
    await sign_in(phone, browser, "o_staff")
    sid, li = town["session"].id, town["li"]
    mine = await _booking(db, sid, li.id)
    wang = next(b for b, r in await cs.session_roster(db, sid) if r.name == "王叔")
    zhao = next(b for b, r in await cs.session_roster(db, sid) if r.name == "赵大爷")
    status, page = await browser.get(f"/console/consultation/{sid}")
    assert 'id="checkin-closed">签到在议事当天开放' in page and 'id="checkin-1"' not in page
    csrf = await browser.csrf(f"/console/consultation/{sid}")
    status, page = await browser.post(f"/console/consultation/{sid}/checkin", {"csrf": csrf, "booking": mine.id})
    assert status == 400 and "签到仅限议事当天" in page  # the storage operation's own refusal

    clock.set(MEETING - dt.timedelta(minutes=10))
    status, page = await browser.get(f"/console/consultation/{sid}")
    assert 'id="form-checkin"' in page and 'id="checkin-1"' in page and 'id="checkin-2"' in page
    status, page = await browser.post(f"/console/consultation/{sid}/checkin", {"csrf": csrf, "booking": mine.id})
    assert status == 200 and 'id="done">签到成功：李**（139****5678）。<' in page and "李阿姨" not in page
    assert _rows(page, "booked")[0] == ["1", "李**", "139****5678", "301", "14:20"]
    assert (await _booking(db, sid, li.id)).checked_in_at == clock.now()

    status, page = await browser.post(f"/console/consultation/{sid}/checkin", {"csrf": csrf, "code": mine.code})
    assert status == 400 and "这位居民已于14:20签到过了。" in page
    status, page = await browser.post(f"/console/consultation/{sid}/checkin", {"csrf": csrf, "booking": zhao.id})
    assert status == 400 and "这位居民不在本场的预约名单上。" in page  # waitlisted: no seat to sign in to
    status, page = await browser.post(f"/console/consultation/{sid}/checkin", {"csrf": csrf, "code": "ZZZZZZ"})
    assert status == 400 and "本场议事没有这个签到码" in page
    assert (await _booking(db, sid, zhao.id)).checked_in_at is None

    # Chat's 议事签到 for 王叔, the console's typed code the same way: the same audit rows.
    assert "签到成功" in (await phone.text("o_staff", f"议事签到 {wang.code}")).text
    clock.advance(minutes=1)
    audits = await _audits(db, "consultation.check_in")
    assert [(a.actor, a.target_type, a.target_id, a.detail) for a in audits] == [
        (f"resident:{town['staff'].id}", "consultation_booking", str(b.id), f'{{"session": {sid}}}')
        for b in (mine, wang)]


async def test_session_settings_as_chats_settings(db, phone, browser, clock, town):
    await sign_in(phone, browser, "o_staff")
    sid = town["session"].id
    csrf = await browser.csrf(f"/console/consultation/{sid}")
    minutes = str(town["session"].duration_minutes)
    form = {"csrf": csrf, "venue": "大海阳社区党群服务中心", "capacity": "12", "reserved_seats": "10",
            "duration_minutes": minutes}
    status, page = await browser.get(f"/console/consultation/{sid}")
    assert 'id="form-settings"' in page and 'name="capacity" value="12"' in page
    assert f'name="duration_minutes" value="{minutes}"' in page
    status, page = await browser.post(f"/console/consultation/{sid}/settings", form)
    assert status == 400 and 'id="error">没有改动。<' in page
    status, page = await browser.post(f"/console/consultation/{sid}/settings", {**form, "capacity": "十三"})
    assert status == 400 and "总名额请输入数字。" in page
    status, page = await browser.post(f"/console/consultation/{sid}/settings", {**form, "reserved_seats": "12"})
    assert status == 400 and "已有2人预约，可预约名额不能少于2。" in page

    # One more seat: 赵大爷 moves up from the waitlist, as chat's 议事设置 does it.
    status, page = await browser.post(f"/console/consultation/{sid}/settings", {**form, "capacity": "13"})
    assert status == 200 and "议事设置已保存。" in page and 'id="counts">已预约 3，候补 0，余 0<' in page
    assert (await cs.get_session(db, sid)).capacity == 13

    await phone.text("o_staff", "议事设置")
    await phone.text("o_staff", "1")
    session = await cs.get_session(db, sid)
    assert (await phone.text("o_staff", "社区二楼会议室")).text == (
        f"已修改。地点：社区二楼会议室；总名额13，预留{session.reserved_seats}，"
        f"居民可预约{13 - session.reserved_seats}个。")
    audits = await _audits(db, "consultation.edit")
    assert [(a.actor, a.target_type, a.target_id, a.detail) for a in audits] == [
        (f"resident:{town['staff'].id}", "consultation_session", str(sid), '{"capacity": 13}'),
        (f"resident:{town['staff'].id}", "consultation_session", str(sid), '{"venue": "社区二楼会议室"}')]


async def test_check_in_and_settings_of_another_community_are_404_and_need_the_token(db, phone, browser, clock,
                                                                                     town):
    clock.set(MEETING - dt.timedelta(minutes=10))
    sid = town["session"].id
    mine = await _booking(db, sid, town["li"].id)
    await sign_in(phone, browser, "o_other")
    csrf = await browser.csrf("/console/consultation")
    status, _page = await browser.post(f"/console/consultation/{sid}/checkin", {"csrf": csrf, "booking": mine.id})
    assert status == 404
    status, _page = await browser.post(f"/console/consultation/{sid}/settings", {
        "csrf": csrf, "venue": "不该能改", "capacity": "20", "reserved_seats": "0", "duration_minutes": "60"})
    assert status == 404
    await browser.close()

    staff = Browser(browser.base)
    try:
        await sign_in(phone, staff, "o_staff")
        for data in ({"booking": mine.id}, {"booking": mine.id, "csrf": "forged"}):
            status, page = await staff.post(f"/console/consultation/{sid}/checkin", data)
            assert status == 403 and "页面已过期" in page
        status, page = await staff.post(f"/console/consultation/{sid}/settings", {
            "venue": "没有令牌", "capacity": "20", "reserved_seats": "0", "duration_minutes": "60"})
        assert status == 403 and "页面已过期" in page
    finally:
        await staff.close()
    assert (await _booking(db, sid, town["li"].id)).checked_in_at is None
    assert (await cs.get_session(db, sid)).venue == "大海阳社区党群服务中心"
    assert await _audits(db, "consultation.check_in") == [] and await _audits(db, "consultation.edit") == []


# ---------------------------------------------------------------------------------------------- 广播


async def test_compose_preview_the_exact_count_confirm_follow_and_stop(db, phone, browser, clock, town):
    d = town["d"]
    await sign_in(phone, browser, "o_staff")
    status, page = await browser.get("/console/broadcasts")
    assert status == 200 and 'class="on">广播<' in page and "您还没有发送过广播。" in page
    c1 = d.communities["C1"].id
    choices = await bc.audience_choices(db, Actor.operator("cli:x"), now=clock.now())  # everything, for the values
    assert {f'value="{a.kind}:{",".join(map(str, a.ids))}"' in page for a in choices if a.kind == "street"} == {False}
    assert f'value="community:{c1}"' in page and "大海阳社区1号楼" in page and "南山社区8号楼" not in page
    assert f'value="session:{town["session"].id}"' in page
    csrf = await browser.csrf("/console/broadcasts")

    b1, b2 = d.buildings["B1"].id, d.buildings["B2"].id
    form = {"csrf": csrf, "text": "本周六上午停水，请提前储水。",
            "audience": [f"buildings:{b1}", f"grids:{d.grids['G1'].id}"]}
    status, page = await browser.post("/console/broadcasts", form)
    assert status == 400 and "一次只能选择一类对象" in page and "本周六上午停水" in page  # the text is kept
    form["audience"] = [f"buildings:{d.buildings['B4'].id}"]  # not offered: another community's building
    status, page = await browser.post("/console/broadcasts", form)
    assert status == 400 and "请选择发送对象。" in page

    form["audience"] = [f"buildings:{b1}", f"buildings:{b2}"]
    status, page = await browser.post("/console/broadcasts", form)
    expected = await bc.count_audience(db, "buildings", [b1, b2])
    assert expected == 3  # 李阿姨, 社工小周 (1号楼) and 王叔 (2号楼)
    assert status == 200 and f'id="recipients">共 {expected} 人<' in page and "大海阳社区1号楼、大海阳社区2号楼" in page
    bid = int(re.search(r"广播预览 #(\d+)", page).group(1))
    assert (await bc.get(db, bid)).status == bc.BroadcastStatus.DRAFT and await _audits(db, "broadcast.confirm") == []

    status, page = await browser.post(f"/console/broadcasts/{bid}/confirm", {"csrf": csrf})
    assert status == 200 and "已确认，广播开始发送。" in page and 'id="progress">已发送 0 / 共 3，失败 0' in page
    [audit] = await _audits(db, "broadcast.confirm")
    assert audit.actor == f"resident:{town['staff'].id}"
    status, page = await browser.post(f"/console/broadcasts/{bid}/confirm", {"csrf": csrf})
    assert status == 400 and "这条广播已经确认过了，不会重复发送。" in page

    await bc.run_enqueue(db, clock.now())
    status, page = await browser.get("/console/broadcasts")
    label = "大海阳社区1号楼、大海阳社区2号楼"
    assert _rows(page, "sent")[0][:4] == [f"#{bid}", f"{label}本周六上午停水，请提前储水。", "发送中",
                                          "已发送 0 / 共 3，失败 0"]

    status, page = await browser.post(f"/console/broadcasts/{bid}/cancel", {"csrf": csrf})
    assert status == 200 and "广播已停止" in page and "已停止" in page
    assert (await bc.get(db, bid)).status == bc.BroadcastStatus.CANCELLED
    assert len(await _audits(db, "broadcast.cancel")) == 1


async def test_another_persons_broadcast_is_404_and_forms_need_the_token(db, phone, browser, clock, town):
    audience = bc.Audience("community", (town["d"].communities["C1"].id,), "大海阳社区全体居民")
    staff = await actor_for(db, town["staff"].id)
    draft = await bc.save_draft(db, staff, "社区通知：明天开会。", audience, clock.now())
    await sign_in(phone, browser, "o_other")
    csrf = await browser.csrf("/console/broadcasts")
    assert (await browser.get(f"/console/broadcasts/{draft.id}"))[0] == 404
    assert (await browser.post(f"/console/broadcasts/{draft.id}/confirm", {"csrf": csrf}))[0] == 404
    await browser.close()

    staff = Browser(browser.base)
    try:
        await sign_in(phone, staff, "o_staff")
        status, page = await staff.post(f"/console/broadcasts/{draft.id}/confirm", {"csrf": "forged"})
        assert status == 403 and "页面已过期" in page
    finally:
        await staff.close()
    assert (await bc.get(db, draft.id)).status == bc.BroadcastStatus.DRAFT
    assert await _audits(db, "broadcast.confirm") == []


# ---------------------------------------------------------------------------------------------- in a browser




@pytest.mark.slow
async def test_browser_story_consultation_and_broadcast(db, phone, bot_server, clock, town, chromium):
    _bot, base = bot_server

    async def signed_in(context):
        token = re.search(r"/console/login/([A-Za-z0-9_-]+)", (await phone.text("o_staff", "后台")).text).group(1)
        page = await context.new_page()
        await page.goto(f"{base}/console/login/{token}")
        await page.click("#enter")
        return page

    page = await signed_in(await chromium.new_context(viewport={"width": 1366, "height": 768}))
    await page.goto(f"{base}/console/consultation")
    await page.screenshot(path=ARTIFACTS / "c2-sessions.png", full_page=True)
    await page.click("#sessions-upcoming a")
    assert await page.inner_text("#counts") == "已预约 2，候补 1，余 0"
    await page.screenshot(path=ARTIFACTS / "c2-session.png", full_page=True)
    await page.click("#sheet-link")
    await page.emulate_media(media="print")
    assert not await page.is_visible("header.top")
    await page.screenshot(path=ARTIFACTS / "c2-sheet-print.png", full_page=True)
    await page.emulate_media(media="screen")

    await page.goto(f"{base}/console/broadcasts")
    await page.fill("textarea[name=text]", "本周六上午停水，请提前储水。")
    await page.click("details.audience:nth-of-type(3) summary")  # 按楼栋
    await page.check(f"input[value='buildings:{town['d'].buildings['B1'].id}']")
    await page.click("#form-compose button[type=submit]")
    assert await page.inner_text("#recipients") == "共 2 人"
    await page.screenshot(path=ARTIFACTS / "c2-broadcast-preview.png", full_page=True)
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("#form-confirm button")
    await page.wait_for_selector("#done")
    await page.screenshot(path=ARTIFACTS / "c2-broadcast-sent.png", full_page=True)

    small = await signed_in(await chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True))
    await small.goto(f"{base}/console/consultation/{town['session'].id}")
    await small.screenshot(path=ARTIFACTS / "c2-session-phone.png", full_page=True)
    await small.goto(f"{base}/console/broadcasts")
    await small.screenshot(path=ARTIFACTS / "c2-broadcasts-phone.png", full_page=True)
