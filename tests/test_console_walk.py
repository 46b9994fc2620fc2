"""What a walk through the console as district and community staff stumbled on, each pinned: 统计 for someone it
is closed to points to 考核评价 instead of offering a month picker for nothing; a need's forms say what to type in
the form, not chat's command syntax (chat's one-line 分流 still shows it); a broadcast confirmed at night says
when it goes out; a refused 考核 value links to the form it came from."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest

from storage.needs import find_need, report_need
from tests.console_client import Browser, sign_in
from tests.factories import make_cast, make_district

TZ = ZoneInfo("Asia/Shanghai")


@pytest.fixture
async def town(db, clock):
    d = await make_district(db)
    cast = await make_cast(db, d)
    need = await report_need(db, cast.resident.id, "楼道灯坏了一个多星期", "JZ-05", clock.now())
    return {"d": d, "c1": d.communities["C1"], "need": need}


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


async def test_stats_closed_to_district_staff_point_to_assess_without_a_month_picker(phone, browser, town):
    await sign_in(phone, browser, "o_clerk")
    status, page = await browser.get("/console/stats")
    assert status == 403 and "统计只对社区工作人员和管理员开放。" in page
    assert 'id="stats-filters"' not in page and 'type="month"' not in page
    assert re.search(r'id="see-assess">.*href="/console/assess">考核评价<', page)

    worker = Browser(browser.base)
    try:
        await sign_in(phone, worker, "o_worker")
        status, page = await worker.get("/console/stats")
        assert status == 403 and 'id="stats-filters"' not in page and 'id="see-assess"' not in page
    finally:
        await worker.close()


async def test_a_needs_forms_say_what_to_fill_in_not_chats_command_syntax(db, phone, browser, town):
    ticket = town["need"].ticket
    await sign_in(phone, browser, "o_staff")
    status, page = await browser.get(f"/console/needs/{ticket}")
    suggested = town["need"].tier
    assert status == 200 and re.search(rf'name="tier" value="{suggested}"[^>]*checked', page)
    assert len(re.findall(r'name="tier" value="[ABC]"[^>]*checked', page)) == 1
    assert 'placeholder="填写要并入的诉求编号"' in page  # no same-kind needs offered: no 「或」 before it
    assert re.search(r'id="form-reject">.*?<textarea[^>]*minlength="2"', page, re.S)  # storage wants 2 characters
    csrf = _csrf(page)

    # 12-10 is nine working days after Friday 11-27: beyond the default seven without a reason.
    status, page = await browser.post(f"/console/needs/{ticket}/triage",
                                      {"csrf": csrf, "tier": "B", "deadline": "2026-12-10", "text": ""})
    assert status == 400 and "办结期限超过7个工作日，需要写明延期理由。" in page and "&lt;编号&gt;" not in page
    status, page = await browser.post(f"/console/needs/{ticket}/triage",
                                      {"csrf": csrf, "tier": "B", "deadline": "2026-12-10", "text": "需协调物业"})
    assert status == 200 and "已分流定级。" in page
    for form in ("progress", "resolve"):
        assert re.search(rf'id="form-{form}">.*?<textarea[^>]*minlength="2"', page, re.S)

    status, page = await browser.post(f"/console/needs/{ticket}/resolve", {"csrf": csrf, "text": "好"})
    assert status == 400 and "办结需要写明办理结果，例如：已更换楼道灯。" in page and "例如：办结 2026" not in page
    status, page = await browser.post(f"/console/needs/{ticket}/progress", {"csrf": csrf, "text": "好"})
    assert status == 400 and "请写上进展内容，例如：已联系物业" in page and "例如：进展 2026" not in page
    assert (await find_need(db, ticket)).resolved_at is None


async def test_chats_one_line_triage_still_shows_where_the_reason_goes(phone, town):
    reply = (await phone.text("o_staff", f"分流 {town['need'].ticket} B 12-10")).text
    assert "办结期限超过7个工作日，需要写明延期理由。" in reply
    assert "格式：分流 <编号> A|B|C [月-日] [延期理由]" in reply
    reply = (await phone.text("o_staff", f"分流 {town['need'].ticket} B 12-10 需协调物业")).text
    assert "延期理由" not in reply and "格式" not in reply


async def test_a_broadcast_confirmed_at_night_says_when_it_goes_out(phone, browser, clock, town):
    clock.set(dt.datetime(2026, 11, 27, 22, 15, tzinfo=TZ))
    await sign_in(phone, browser, "o_staff")
    csrf = await browser.csrf("/console/broadcasts")
    audience = f"community:{town['c1'].id}"
    night = "已确认。现在是夜间免打扰时段，广播将在08:00开始发送。"
    for urgent, said in (("", night), ("1", "已确认，广播开始发送。")):
        form = {"csrf": csrf, "text": "明早停水，请提前储水。", "audience": audience, "urgent": urgent}
        status, page = await browser.post("/console/broadcasts", form)
        bid = int(re.search(r"广播预览 #(\d+)", page).group(1))
        status, page = await browser.post(f"/console/broadcasts/{bid}/confirm", {"csrf": csrf})
        assert status == 200 and said in page

    clock.set(dt.datetime(2026, 11, 30, 10, 0, tzinfo=TZ))
    form = {"csrf": csrf, "text": "今天下午停水。", "audience": audience}
    status, page = await browser.post("/console/broadcasts", form)
    bid = int(re.search(r"广播预览 #(\d+)", page).group(1))
    status, page = await browser.post(f"/console/broadcasts/{bid}/confirm", {"csrf": csrf})
    assert status == 200 and "已确认，广播开始发送。" in page and "夜间" not in page


async def test_a_refused_assessment_value_links_to_its_form(phone, browser, town):
    c1 = town["c1"].id
    await sign_in(phone, browser, "o_clerk")
    status, page = await browser.get(f"/console/assess/{c1}?year=2026")
    status, page = await browser.post(f"/console/assess/{c1}/enter?year=2026",
                                      {"csrf": _csrf(page), "indicator": "A1.2", "value": "abc", "note": ""})
    top = re.search(r'<p class="alert" id="error">(.*?)</p>', page, re.S).group(1)
    assert status == 400 and "请填写数字" in top and 'href="#form-A1.2"' in top and 'id="form-A1.2"' in page

    staff = Browser(browser.base)
    try:
        await sign_in(phone, staff, "o_staff")
        status, page = await staff.get(f"/console/assess/{c1}?year=2026")
        status, page = await staff.post(f"/console/assess/{c1}/enter?year=2026",
                                        {"csrf": _csrf(page), "indicator": "A1.2", "value": "50", "note": ""})
        assert status == 403 and "只有区级工作人员可以录入" in page and 'href="#form-' not in page
    finally:
        await staff.close()
