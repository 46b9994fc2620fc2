"""The console's 统计 page (bot/console/stats.py): the 三率 of the signed-in person's scope for a month — its trend,
the ranking and the categories, each chart's numbers in a table beside it — are `storage.stats.rates` for that
person's Actor, the operation chat's 「本月统计」 calls; another community's report is 404; ECharts is served
locally. A browser story (slow) draws the charts and saves screenshots to test-artifacts/console/stats-*.png."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from bot.config import Settings
from storage.actor import actor_for
from storage.needs import report_need, resolve_need, triage_need
from storage.roles import Role
from storage.stats import month_period, percent, rates
from tests.browser import ARTIFACTS, LINK
from tests.console_client import Browser, sign_in
from tests.factories import grant, make_district, make_resident

DATA = re.compile(r'<script type="application/json" id="stats-data">(.*?)</script>', re.S)


def _table(page: str, table_id: str) -> list[list[str]]:
    """The body rows of a table on the page, as cell texts."""
    body = re.search(rf'<table class="rates" id="{table_id}">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


@pytest.fixture
def settings(fake_wechat, tmp_path) -> Settings:
    return Settings(wechat_token="stewardtest", wechat_api_base=fake_wechat.base_url, media_dir=tmp_path / "media")


@pytest.fixture
async def town(db, clock):
    """C1: three needs this month (one answered and resolved at once, one answered) and one last month; C2: one."""
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"], room="301", phone="13912345678", name="李阿姨")
    south = await make_resident(db, "o_south", d.buildings["B4"], room="101", phone="13812345678", name="王叔")
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    other = await make_resident(db, "o_other", d.buildings["B4"], name="南山小王", phone="13600000000")
    await grant(db, other, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    admin = await make_resident(db, "o_admin", d.buildings["B1"], name="区管理员", phone="13500000000")
    await grant(db, admin, Role.ADMIN)
    worker = await make_resident(db, "o_worker", d.buildings["B1"], name="网格员老陈", phone="13400000000")
    await grant(db, worker, Role.GRID_WORKER, d.grids["G1"].id)
    now = clock.now()
    me = await actor_for(db, staff.id)
    first = await report_need(db, resident.id, "楼道灯坏了", "JZ-05", now - dt.timedelta(days=3))
    second = await report_need(db, resident.id, "小区门口有积水", "JZ-01", now - dt.timedelta(days=2))
    await report_need(db, resident.id, "垃圾桶满了", "JZ-01", now - dt.timedelta(hours=2))
    await report_need(db, resident.id, "上个月的问题", "JZ-01", now - dt.timedelta(days=40))
    await triage_need(db, me, first.ticket, "B", now - dt.timedelta(days=3) + dt.timedelta(hours=1))
    await resolve_need(db, me, first.ticket, "已更换", now - dt.timedelta(days=2))
    await triage_need(db, me, second.ticket, "B", now - dt.timedelta(days=2) + dt.timedelta(hours=2))
    await report_need(db, south.id, "南山的问题", "JZ-01", now - dt.timedelta(days=1))
    return {"d": d, "staff": staff, "other": other, "admin": admin, "worker": worker}


async def test_the_stats_page_shows_the_months_rates_with_their_charts_data(db, phone, browser, clock, town):
    await sign_in(phone, browser, "o_staff")
    status, page = await browser.get("/console/stats")
    assert status == 200
    assert '<a href="/console/stats" class="on">统计</a>' in page
    d = town["d"]
    c1 = d.communities["C1"].name
    assert f"{c1} · 2026年11月报来的诉求" in page

    # The numbers are the operation's, for this person's Actor.
    report = await rates(db, await actor_for(db, town["staff"].id), clock.now(),
                         period=month_period("2026-11", clock.now()))
    t = report.total
    assert t.reported == 3
    assert '<b id="count-reported">3</b>' in page
    assert f'<b id="rate-response">{percent(t.response_rate)}</b>' in page
    assert f'<b id="rate-resolution">{percent(t.resolution_rate)}</b>' in page
    assert f'<b id="rate-satisfaction">{percent(t.satisfaction_rate)}</b>' in page
    assert "南山" not in page  # C2 is not this person's

    # Trend: the twelve months ending with this one, last month's need in October.
    trend = _table(page, "table-trend")
    assert [r[0] for r in trend] == [f"{y}-{m:02d}" for y, m in [(2025, 12)] + [(2026, m) for m in range(1, 12)]]
    assert trend[-1][1] == "3" and trend[-2][1] == "1" and trend[0][1:] == ["0", "—", "—", "—"]

    # One community: its grids are ranked; the categories by count.
    assert "网格排名" in page
    ranking = _table(page, "table-ranking")
    assert sum(int(r[1]) for r in ranking) == 3
    categories = _table(page, "table-categories")
    assert sum(int(r[1]) for r in categories) == 3
    assert [int(r[1]) for r in categories] == sorted((int(r[1]) for r in categories), reverse=True)

    # The charts draw the same numbers, from a JSON block (the CSP runs no inline script) and local ECharts.
    data = json.loads(DATA.search(page).group(1))
    assert data["trend"]["reported"][-1] == 3 and len(data["trend"]["labels"]) == 12
    assert data["trend"]["resolution"][0] is None  # nothing due: a gap, not 0%
    assert data["ranking"]["labels"] == [r[0] for r in ranking]
    assert data["categories"]["reported"] == [int(r[1]) for r in categories]
    assert 'src="/console/static/vendor/echarts/echarts.min.js"' in page
    assert "cdn" not in page.lower()
    status, script, headers = await browser.raw("/console/static/vendor/echarts/echarts.min.js")
    assert status == 200 and b"echarts" in script[:2000] and "javascript" in headers["Content-Type"]
    status, _js, _headers = await browser.raw("/console/static/stats.js")
    assert status == 200
    full = re.search(r'<table class="rates" id="table-full">.*?</table>', page, re.S).group(0)
    assert "<th>网格</th>" in full and "合计" in full


async def test_the_month_picker_moves_between_months_and_a_bad_month_gets_a_hint(phone, browser, town):
    await sign_in(phone, browser, "o_staff")
    status, page = await browser.get("/console/stats?month=2026-10&rank=reported")
    assert status == 200 and "2026年10月报来的诉求" in page
    assert '<b id="count-reported">1</b>' in page
    assert 'name="month" value="2026-10"' in page and "按诉求量" in page
    assert 'href="/console/stats?month=2026-09&amp;rank=reported"' in page
    assert 'href="/console/stats?month=2026-11&amp;rank=reported"' in page
    status, page = await browser.get("/console/stats?month=2026-11")
    assert 'id="next"' not in page  # December has not begun
    status, page = await browser.get("/console/stats?month=2024-01")
    assert status == 200 and "没有收到诉求" in page
    status, page = await browser.get("/console/stats?month=不知道")
    assert status == 400 and "请写11月或2026-11" in page and 'id="stats-filters"' in page


async def test_an_admin_ranks_the_communities_and_may_open_one(db, phone, browser, clock, town):
    d = town["d"]
    c1, c2 = d.communities["C1"], d.communities["C2"]
    await sign_in(phone, browser, "o_admin")
    status, page = await browser.get("/console/stats?rank=reported")
    assert status == 200 and "全区 · 2026年11月" in page and "社区排名" in page
    assert [r[:2] for r in _table(page, "table-ranking")] == [[c1.name, "3"], [c2.name, "1"]]
    assert f'<option value="{c2.id}" >{c2.name}</option>' in page  # the community picker lists the district

    status, page = await browser.get(f"/console/stats?community={c2.id}")
    assert status == 200 and f"{c2.name} · 2026年11月" in page and "网格排名" in page
    assert '<b id="count-reported">1</b>' in page
    assert (await browser.get("/console/stats?community=99999"))[0] == 404


async def test_another_communitys_report_is_404_and_a_grid_worker_reads_the_refusal(phone, browser, town):
    d = town["d"]
    await sign_in(phone, browser, "o_staff")
    status, page = await browser.get(f"/console/stats?community={d.communities['C2'].id}")
    assert status == 404 and "没有这个页面，或您无权查看" in page and d.communities["C2"].name not in page
    status, page = await browser.get(f"/console/stats?community={d.communities['C1'].id}")
    assert status == 200

    worker = Browser(browser.base)
    try:
        await sign_in(phone, worker, "o_worker")
        status, page = await worker.get("/console/stats")
        assert status == 403 and "统计只对社区工作人员和管理员开放。" in page and "stats-data" not in page
    finally:
        await worker.close()


async def test_the_stats_page_posts_nothing_and_a_forged_post_changes_nothing(db, phone, browser, town):
    """The page only reads (GET, no audit row); its one form that posts — 退出 in the nav — carries the token."""
    await sign_in(phone, browser, "o_staff")
    _status, page = await browser.get("/console/stats")
    assert page.count('method="post"') == 1 and re.search(r'name="csrf" value="[^"]+"', page)
    status, page = await browser.post("/console/logout", {"csrf": "forged"})
    assert status == 403 and "页面已过期" in page
    assert (await browser.get("/console/stats"))[0] == 200  # still signed in


# ---------------------------------------------------------------------------------------------- in a browser



@pytest.mark.slow
async def test_the_charts_draw_in_a_browser_at_the_office_and_on_a_phone(phone, bot_server, town, chromium):
    _bot, url = bot_server
    for name, viewport, mobile in (("office", {"width": 1366, "height": 768}, False),
                                   ("phone", {"width": 390, "height": 844}, True)):
        context = await chromium.new_context(viewport=viewport, is_mobile=mobile)
        page = await context.new_page()
        problems: list[str] = []
        page.on("console", lambda m, seen=problems: seen.append(f"{m.text} {m.location.get('url', '')}")
                if m.type == "error" and "favicon" not in m.location.get("url", "") else None)
        page.on("pageerror", lambda e, seen=problems: seen.append(str(e)))
        token = LINK.search((await phone.text("o_staff", "后台")).text).group(1)
        await page.goto(f"{url}/console/login/{token}")
        await page.click("#enter")
        await page.wait_for_selector("text=待分流")
        await page.click("nav >> text=统计")
        for chart in ("#chart-trend", "#chart-ranking", "#chart-categories"):
            await page.wait_for_selector(f"{chart} canvas")
            box = await page.locator(chart).bounding_box()
            assert box["width"] > 200 and box["height"] >= 160  # the ranking: a bar a row
        assert problems == []  # the CSP lets ECharts run: nothing refused, nothing thrown
        await page.screenshot(path=ARTIFACTS / f"stats-{name}.png", full_page=True)
        assert await page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        if not mobile:
            await page.fill("input[name=month]", "2026-10")
            await page.click("#apply")
            await page.wait_for_url(re.compile(r"month=2026-10"))
            await page.wait_for_selector("#chart-trend canvas")
            assert await page.inner_text("#count-reported") == "1"
            await page.screenshot(path=ARTIFACTS / f"stats-{name}-october.png", full_page=True)
        await context.close()
