"""The console's 考核评价 and 月度报告 (bot/console/c4.py): the yearly scores computed by storage/assess.py for the
communities a person may see (a community's staff: their own row and its rank among all), each number explained,
values entered only by whom the CLI lets (its refusal, its audit row), a bad value refused on the page; the monthly
report files the person may take, downloaded and audited, and nothing else the folder (or a URL) names."""

from __future__ import annotations

import datetime as dt
import io
import re

import openpyxl
import pytest
from sqlmodel import select
from yarl import URL

from storage.actor import Actor, actor_for
from storage.assess import IndicatorValue, assess, load_system
from storage.needs import rate_need, report_need, resolve_need, triage_need
from storage.outbox import OutboxMessage
from storage.reports import previous_month, write_report
from storage.roles import AuditLog
from storage.stats import month_period
from storage.survey import Survey, start_survey
from tests.browser import ARTIFACTS
from tests.console_client import sign_in
from tests.factories import make_cast, make_district, make_resident

H = dt.timedelta(hours=1)


@pytest.fixture
async def town(db, clock):
    """2026 so far: 大海阳社区 (C1) had two needs answered, resolved in time and rated 满意 — the full 5 + 5 + 4 of
    B1.1–B1.3 and nothing else, 14.00 — and 南山社区 (C2) nothing, 0.00. Each has a staff member; the district has a
    clerk of 区住建局 (district staff) and a grid worker."""
    d = await make_district(db)
    cast = await make_cast(db, d, other=True)
    staff, resident = cast.staff, cast.resident
    me, t0 = await actor_for(db, staff.id), clock.now()
    for text in ("楼道灯坏了", "垃圾没清运"):
        ticket = (await report_need(db, resident.id, text, "JZ-01", t0)).ticket
        await triage_need(db, me, ticket, "B", t0 + H)
        await resolve_need(db, me, ticket, "已处理", t0 + 2 * H)
        await rate_need(db, resident.id, ticket, "满意", t0 + 3 * H)
    clock.advance(days=1)
    return {"d": d, "c1": d.communities["C1"], "c2": d.communities["C2"], "staff": staff, "other": cast.other,
            "clerk": cast.clerk}


async def _audits(db, action: str) -> list[AuditLog]:
    async with db.read() as s:
        return list((await s.exec(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id))).all())


async def _values(db) -> list[tuple[int, str, float]]:
    async with db.read() as s:
        rows = (await s.exec(select(IndicatorValue).order_by(IndicatorValue.id))).all()
    return [(r.community_id, r.indicator, r.value) for r in rows]


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


async def test_district_staff_see_every_community_scored_and_ranked_with_each_number_explained(
        db, phone, browser, town):
    await sign_in(phone, browser, "o_clerk")
    status, page = await browser.get("/console/stats")
    assert 'href="/console/assess" id="link-assess">考核评价<' in page
    assert 'href="/console/reports" id="link-reports">月度报告<' in page

    status, page = await browser.get("/console/assess?year=2026")
    words = _text(page)
    assert status == 200 and "<h1>考核评价" in page and 'class="on">统计' in page
    assert "1/2 大海阳社区" in words and "2/2 南山社区" in words
    c1_row = _text(re.search(rf'<tr id="community-{town["c1"].id}">.*?</tr>', page, re.S).group(0))
    assert " 14.00 " in c1_row and " 0.00 14.00 " in c1_row  # A 党建引领 0, B 诉求响应 14
    c2_row = _text(re.search(rf'<tr id="community-{town["c2"].id}">.*?</tr>', page, re.S).group(0))
    assert " 0.00 " in c2_row and "14.00" not in c2_row

    status, page = await browser.get(f"/console/assess/{town['c1'].id}?year=2026")
    words = _text(page)
    assert status == 200 and 'id="total">14.00<' in page and 'id="rank">1/2<' in page
    b11 = _text(re.search(r'<tr id="item-B1.1">.*?</tr>', page, re.S).group(0))
    assert "诉求按时响应率：2026年报来的诉求：按时响应/应响应 2/2" in b11 and "100.0% 95.0% 5 5.00" in b11
    assert "区级工作人员尚未录入" in words and 'id="form-A1.1"' in page and 'id="form-B1.1"' not in page

    # A year the page cannot assess is said, not a crash.
    status, page = await browser.get("/console/assess?year=1999")
    assert status == 400 and "年份 1999 不对" in page


async def test_a_communitys_staff_see_only_their_row_and_enter_nothing(db, phone, browser, town):
    await sign_in(phone, browser, "o_other")
    c1, c2 = town["c1"].id, town["c2"].id
    status, page = await browser.get("/console/assess?year=2026")
    words = _text(page)
    assert status == 200 and "2/2 南山社区" in words and "大海阳社区" not in words
    assert f"/console/assess/{c1}" not in page

    assert (await browser.get(f"/console/assess/{c1}?year=2026"))[0] == 404
    assert (await browser.get("/console/assess/999999?year=2026"))[0] == 404  # the same answer as no community
    status, page = await browser.get(f"/console/assess/{c2}?year=2026")
    assert status == 200 and 'id="rank">2/2<' in page and 'id="form-A1.1"' not in page
    csrf = _csrf(page)
    form = {"csrf": csrf, "indicator": "A1.1", "value": "12", "note": "自评"}
    assert (await browser.post(f"/console/assess/{c1}/enter?year=2026", form))[0] == 404
    status, page = await browser.post(f"/console/assess/{c2}/enter?year=2026", form)
    assert status == 403 and "只有区级工作人员可以录入社区的评价指标。" in page  # the CLI's rule: none marks itself
    assert await _values(db) == [] and await _audits(db, "indicator.enter") == []

    # The export carries their row alone.
    status, body, _headers = await browser.raw("/console/assess.xlsx?year=2026")
    ranking = list(openpyxl.load_workbook(io.BytesIO(body))["排名"].iter_rows(values_only=True))
    assert status == 200 and [r[:4] for r in ranking[2:]] == [(2, "南山社区", "C2", 0)]


async def test_a_grid_worker_is_told_the_pages_are_not_theirs(db, phone, browser, town):
    await sign_in(phone, browser, "o_worker")
    for path in ("/console/assess", "/console/reports", "/console/surveys"):
        status, page = await browser.get(path)
        assert status == 403 and "只对社区工作人员、区级工作人员和管理员开放" in page and "大海阳社区" not in page
    assert (await browser.get(f"/console/assess/{town['c1'].id}"))[0] == 404


async def test_an_entered_value_changes_the_score_is_audited_and_a_bad_one_saves_nothing(db, phone, browser, town):
    await sign_in(phone, browser, "o_clerk")
    c1 = town["c1"].id
    status, page = await browser.get(f"/console/assess/{c1}?year=2026")
    csrf = _csrf(page)

    status, page = await browser.post(f"/console/assess/{c1}/enter?year=2026",
                                      {"csrf": csrf, "indicator": "A1.1", "value": "12", "note": "党委会议记录12份"})
    assert status == 200 and "已录入，得分已按新值重算" in page and 'id="total">17.00<' in page
    assert f"resident:{town['clerk'].id}于2026-11-28录入" in _text(page)  # the basis assess gives, as the CLI shows
    assert await _values(db) == [(c1, "A1.1", 12.0)]
    [row] = await _audits(db, "indicator.enter")
    assert row.actor == f"resident:{town['clerk'].id}" and row.target_id == str(c1)
    assert '"value": 12.0' in row.detail and '"note": "党委会议记录12份"' in row.detail
    status, page = await browser.get("/console/assess?year=2026")
    c1_row = _text(re.search(rf'<tr id="community-{c1}">.*?</tr>', page, re.S).group(0))
    assert " 17.00 3.00 14.00 " in c1_row

    for value, indicator, hint in (("十二", "A1.1", "请填写数字，如 12 或 0.5。"), ("nan", "A1.1", "请填写数字"),
                                   ("150", "A1.2", "「A1.2 党员参与志愿服务比例」的值应0到100（%）。"),
                                   ("3", "B1.1", "由系统根据诉求按时响应率计算，不需要录入。")):
        status, page = await browser.post(f"/console/assess/{c1}/enter?year=2026",
                                          {"csrf": csrf, "indicator": indicator, "value": value, "note": ""})
        assert status == 400 and hint in page and 'id="total">17.00<' in page
    assert await _values(db) == [(c1, "A1.1", 12.0)] and len(await _audits(db, "indicator.enter")) == 1

    # A form without the session's CSRF token does nothing.
    status, _page = await browser.post(f"/console/assess/{c1}/enter?year=2026",
                                       {"indicator": "A1.1", "value": "1"})
    assert status == 403 and await _values(db) == [(c1, "A1.1", 12.0)]

    status, body, headers = await browser.raw("/console/assess.xlsx?year=2026")
    assert status == 200 and 'filename="assess-2026.xlsx"' in headers["Content-Disposition"]
    book = openpyxl.load_workbook(io.BytesIO(body))
    ranking = list(book["排名"].iter_rows(values_only=True))
    assert [r[:4] for r in ranking[2:]] == [(1, "大海阳社区", "C1", 17), (2, "南山社区", "C2", 0)]
    a11 = next(r for r in book["明细"].iter_rows(values_only=True) if r[:2] == ("大海阳社区", "A1.1"))
    assert a11[6] == 12 and a11[-1] == 3
    [export] = await _audits(db, "console.export")
    assert export.target_type == "assess" and '"count": 2' in export.detail and "year=2026" in export.detail


@pytest.fixture
async def reports(db, clock, settings, town):
    """October's files as the scheduler writes them, and a stray spreadsheet and a secret beside them."""
    month, now = month_period("2026-10", clock.now()), clock.now()
    for community in (town["c1"], town["c2"], None):
        await write_report(db, settings.data_dir, month, now, community)
    folder = settings.data_dir / "reports" / "2026-10"
    (folder / "stray.xlsx").write_bytes((folder / "C1.xlsx").read_bytes())
    (settings.data_dir / "reports" / "secret.txt").write_text("not for the console")
    return folder


async def test_staff_list_and_download_their_communitys_monthly_report_only(db, phone, browser, town, reports):
    await sign_in(phone, browser, "o_staff")
    status, page = await browser.get("/console/reports")
    words = _text(page)
    assert status == 200 and "2026年10月" in words and "大海阳社区 C1.xlsx" in words
    assert "C2.xlsx" not in page and "district.xlsx" not in page and "stray.xlsx" not in page

    status, body, headers = await browser.raw("/console/reports/2026-10/C1.xlsx")
    assert status == 200 and headers["Content-Type"].startswith("application/vnd.openxmlformats")
    summary = list(openpyxl.load_workbook(io.BytesIO(body))["概要"].iter_rows(values_only=True))
    assert summary[0][0] == "大海阳社区 2026年10月 月度报告"
    [row] = await _audits(db, "console.export")
    assert row.actor == f"resident:{town['staff'].id}" and row.target_type == "report"
    assert "2026-10/C1.xlsx" in row.detail

    for path in ("/console/reports/2026-10/C2.xlsx", "/console/reports/2026-10/district.xlsx",
                 "/console/reports/2026-10/stray.xlsx", "/console/reports/2026-13/C1.xlsx",
                 "/console/reports/2026-09/C1.xlsx"):
        assert (await browser.raw(path))[0] == 404, path
    for raw in ("/console/reports/2026-10/..%2Fsecret.txt", "/console/reports/2026-10/..%2F2026-10%2FC1.xlsx",
                "/console/reports/..%2F2026-10/C1.xlsx", "/console/reports/2026-10/../secret.txt"):
        async with browser.http.get(URL(browser.base + raw, encoded=True)) as r:
            assert r.status == 404 and b"not for the console" not in await r.read(), raw
    assert len(await _audits(db, "console.export")) == 1


async def test_district_staff_take_every_file_the_districts_first(db, phone, browser, town, reports):
    await sign_in(phone, browser, "o_clerk")
    status, page = await browser.get("/console/reports")
    names = re.findall(r'href="/console/reports/2026-10/([^"]+)"', page)
    assert status == 200 and names == ["district.xlsx", "C1.xlsx", "C2.xlsx"]  # no stray file
    assert "全区 district.xlsx" in _text(page)
    status, body, _headers = await browser.raw("/console/reports/2026-10/district.xlsx")
    summary = list(openpyxl.load_workbook(io.BytesIO(body))["概要"].iter_rows(values_only=True))
    assert status == 200 and summary[0][0] == "全区 2026年10月 月度报告"
    assert (await browser.raw("/console/reports/2026-10/stray.xlsx"))[0] == 404


@pytest.mark.slow
async def test_district_staff_assess_and_take_a_report_in_a_browser(db, phone, bot_server, town, clock, settings,
                                                                    chromium):
    _bot, url = bot_server
    system = load_system(data_dir=settings.data_dir)
    c1, c2 = town["c1"].id, town["c2"].id

    async def scores() -> dict[int, str]:
        result = await assess(db, system, clock.now().year, clock.now())
        return {r.community_id: f"{r.total:.2f}" for r in result.rows}

    async def enter(page) -> None:
        token = re.search(r"/console/login/([A-Za-z0-9_-]+)", (await phone.text("o_clerk", "后台")).text).group(1)
        await page.goto(f"{url}/console/login/{token}")
        await page.click("#enter")
        await page.wait_for_selector("nav")

    office = await chromium.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    page = await office.new_page()
    await enter(page)

    before = await scores()
    await page.click("nav >> text=统计")
    await page.click("#link-assess")
    await page.wait_for_selector("#assess-table")
    for cid, name in ((c1, "大海阳社区"), (c2, "南山社区")):
        cells = [c.strip() for c in (await page.inner_text(f"#community-{cid}")).split("\t")]
        assert name in cells[1] and cells[2] == before[cid], (name, cells)
    assert before[c1] != before[c2]  # the table must tell the two apart
    # Every area's column is in view on a laptop, not behind the table's own scroll bar.
    assert await page.evaluate("(s => s.scrollWidth <= s.clientWidth)(document.querySelector('#assess-table')"
                               ".parentElement)")
    await page.screenshot(path=ARTIFACTS / "c4-assess.png", full_page=True)

    await page.click("#assess-table >> text=大海阳社区")
    form = '[id="form-A1.1"]'
    await page.fill(f"{form} input[name=value]", "12")
    await page.fill(f"{form} input[name=note]", "党委会议记录12份")
    await page.click(f"{form} button")
    await page.wait_for_selector("#done >> text=已录入")
    after = await scores()
    shown = (await page.inner_text("#total")).strip()
    assert shown == after[c1] and shown != before[c1], (shown, before[c1], after[c1])
    assert after[c2] == before[c2]
    assert "12" in await page.inner_text('[id="item-A1.1"]')
    [row] = await _audits(db, "indicator.enter")
    assert row.actor == f"resident:{town['clerk'].id}" and row.target_id == str(c1)
    assert '"note": "党委会议记录12份"' in row.detail
    await page.screenshot(path=ARTIFACTS / "c4-assess-detail.png", full_page=True)

    month = previous_month(clock.now())
    await write_report(db, settings.data_dir, month, clock.now(), town["c1"])
    await page.click("#tabs >> text=月度报告")
    await page.wait_for_selector(f"#month-{month.key}")
    await page.screenshot(path=ARTIFACTS / "c4-reports.png", full_page=True)
    async with page.expect_download() as info:
        await page.click(f'#month-{month.key} a[href$="/C1.xlsx"]')
    download = await info.value
    assert download.suggested_filename == f"report-{month.key}-C1.xlsx"
    book = openpyxl.load_workbook(io.BytesIO((await download.path()).read_bytes()))  # saved without an extension
    title = book.worksheets[0]["A1"].value
    assert title.startswith("大海阳社区") and month.label in title, title
    [export] = await _audits(db, "console.export")
    assert export.target_type == "report" and f"{month.key}/C1.xlsx" in export.detail

    await page.click("#tabs >> text=满意度问卷")
    await page.fill("#form-survey input[name=per_community]", "5")
    await page.click("#form-survey button")
    await page.wait_for_selector("#done >> text=问卷已发出")
    [survey] = await _surveys(db)
    assert f"随机种子 {survey.seed}" in await page.inner_text(f"#survey-{survey.id}")
    await page.screenshot(path=ARTIFACTS / "c4-surveys.png", full_page=True)

    # On a phone the ranking scrolls inside its own box; the page itself does not scroll sideways.
    mobile = await chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    small = await mobile.new_page()
    await enter(small)
    for name, path in (("assess", "/assess"), ("assess-detail", f"/assess/{c1}"), ("surveys", "/surveys")):
        await small.goto(f"{url}/console{path}")
        await small.wait_for_selector("#tabs")
        width, inner = await small.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width <= inner + 1, (path, width, inner)
        await small.screenshot(path=ARTIFACTS / f"c4-{name}-phone.png", full_page=True)
    await mobile.close()
    await office.close()


async def test_staff_make_this_months_report_for_their_community_and_the_district_every_file(
    db, phone, browser, town, clock
):
    # The clock is 2026-11-28: this month so far, or October again; never an older or a later month.
    await sign_in(phone, browser, "o_staff")
    _status, page = await browser.get("/console/reports")
    assert '<option value="2026-11">2026年11月（截至现在）</option>' in page and '<option value="2026-10">' in page
    assert "2026-09" not in page.split('id="form-make"')[1].split("</form>")[0]
    status, page = await browser.post("/console/reports/make", {"csrf": _csrf(page), "month": "2026-11"})
    assert status == 200 and "报告已生成" in page
    names = re.findall(r'href="/console/reports/2026-11/([^"]+)"', page)
    assert names == ["C1.xlsx"]  # their community's file only
    status, body, _headers = await browser.raw("/console/reports/2026-11/C1.xlsx")
    summary = list(openpyxl.load_workbook(io.BytesIO(body))["概要"].iter_rows(values_only=True))
    assert status == 200 and summary[0][0] == "大海阳社区 2026年11月 月度报告"
    [made] = await _audits(db, "report.make")
    assert made.actor == f"resident:{town['staff'].id}" and made.target_id == "2026-11" and "C2" not in made.detail
    for month in ("2026-09", "2026-12", "2026-13", "x"):
        status, page = await browser.post("/console/reports/make", {"csrf": _csrf(page), "month": month})
        assert status == 400 and ("只能生成本月" in page or "请选择月份" in page), month
    assert len(await _audits(db, "report.make")) == 1

    await sign_in(phone, browser, "o_clerk")
    _status, page = await browser.get("/console/reports")
    status, page = await browser.post("/console/reports/make", {"csrf": _csrf(page), "month": "2026-10"})
    names = re.findall(r'href="/console/reports/2026-10/([^"]+)"', page)
    assert status == 200 and names == ["district.xlsx", "C1.xlsx", "C2.xlsx"]



async def _surveys(db):
    async with db.read() as s:
        return list((await s.exec(select(Survey).order_by(Survey.id))).all())


async def test_district_staff_start_the_survey_once_and_see_its_sample_and_seed(db, phone, browser, town):
    await sign_in(phone, browser, "o_clerk")
    status, page = await browser.get("/console/stats")
    assert 'href="/console/surveys" id="link-surveys">满意度问卷<' in page
    status, page = await browser.get("/console/surveys")
    assert status == 200 and 'id="form-survey"' in page and 'id="no-surveys"' in page
    for typed, words in (("abc", "请填1到500的整数"), ("0", "需在1到500之间"), ("501", "需在1到500之间")):
        status, page = await browser.post("/console/surveys/start", {"csrf": _csrf(page), "per_community": typed})
        assert status == 400 and words in page and f'value="{typed}"' in page, typed
    assert await _surveys(db) == []

    form = {"csrf": _csrf(page), "per_community": "5"}
    status, page = await browser.post("/console/surveys/start", form)
    [survey] = await _surveys(db)
    assert status == 200 and "问卷已发出" in page and f'id="survey-{survey.id}"' in page
    assert 'id="form-survey"' not in page and f"问卷 {survey.id} 答题至2026-12-28" in _text(page)
    words = _text(page)
    assert f"随机种子 {survey.seed}" in words and "每社区抽5人" in words and "大海阳社区" in words
    [started] = await _audits(db, "survey.start")
    assert started.actor == f"resident:{town['clerk'].id}" and started.target_id == str(survey.id)
    async with db.read() as s:
        invited = (await s.exec(select(OutboxMessage).where(OutboxMessage.kind == "survey_invite"))).all()
    assert invited and f"已答 0/{len(invited)}" in words

    # The same form sent again (a double click, a retry): one survey, and why.
    status, page = await browser.post("/console/surveys/start", form)
    assert status == 400 and "还在答题期内" in page and len(await _surveys(db)) == 1


async def test_community_staff_see_their_communitys_survey_and_cannot_start_one(db, phone, browser, town, clock):
    await make_resident(db, "o_nanshan", town["d"].buildings["B4"])  # someone 南山社区's sample can draw
    await start_survey(db, per_community=5, seed=11, actor=Actor.operator("cli:test"), now=clock.now())
    await sign_in(phone, browser, "o_other")  # 南山社区's staff
    status, page = await browser.get("/console/surveys")
    assert status == 200 and 'id="form-survey"' not in page and "随机种子 11" in page
    assert "南山社区" in page and "大海阳社区" not in page
    status, page = await browser.post("/console/surveys/start", {"csrf": _csrf(page), "per_community": "5"})
    assert status == 403 and "只有区级工作人员可以发起满意度问卷" in page and len(await _surveys(db)) == 1
