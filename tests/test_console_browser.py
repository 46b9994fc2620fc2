"""The staff console in a real browser (Playwright driving Debian's chromium, never Playwright's own download):
a staff member signs in with the link chat gave them, filters the ledger, opens a need, triages it, posts
progress and resolves it — and the resident's pushes reach the fake WeChat API; the ledger's Excel export reads
back; another community's need is 404; a form without its CSRF token, a reused and an expired link are refused.

Screenshots of every page land in test-artifacts/console/ (README, "Staff console")."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import openpyxl
import pytest

from scheduler.runner import SchedulerRunner, job_context
from storage.actor import actor_for
from storage.console_auth import issue_link
from storage.needs import NeedStatus, find_need, report_need, resolve_need
from storage.roles import Role
from tests.browser import ARTIFACTS, LINK
from tests.factories import grant, make_district, make_resident

pytestmark = pytest.mark.slow



async def _pushes(fake_wechat, openid: str, words: str, wait: float = 10.0) -> list[str]:
    """The texts sent to `openid` once one contains `words` (the scheduler's prompt drain sends after the commit)."""
    for _ in range(int(wait * 10)):
        texts = fake_wechat.texts_to(openid)
        if any(words in t for t in texts):
            return texts
        await asyncio.sleep(0.1)
    raise AssertionError(f"no push with {words!r} to {openid}: {fake_wechat.texts_to(openid)}")


async def test_a_staff_member_works_a_need_from_the_console(db, clock, phone, bot_server, fake_wechat, chromium):
    bot, url = bot_server
    runner = SchedulerRunner(job_context(bot), jobs={})  # only the prompt outbox drain, as in `serve`
    runner.start()
    try:
        await _story(db, clock, phone, url, fake_wechat, chromium)
    finally:
        await runner.stop()


async def _story(db, clock, phone, url, fake_wechat, chromium) -> None:
    d = await make_district(db)
    resident = await make_resident(db, "o_res", d.buildings["B1"], room="301", phone="13912345678", name="李阿姨")
    staff = await make_resident(db, "o_staff", d.buildings["B1"], name="社工小周", phone="13700000000")
    await grant(db, staff, Role.COMMUNITY_STAFF, d.communities["C1"].id)
    other = await make_resident(db, "o_other", d.buildings["B4"], name="南山小王", phone="13600000000")
    await grant(db, other, Role.COMMUNITY_STAFF, d.communities["C2"].id)
    need = await report_need(db, resident.id, "3单元楼道灯坏了，晚上很黑", "JZ-05", clock.now())
    await report_need(db, resident.id, "小区门口有积水", "JZ-01", clock.now())

    async def link_for(openid: str) -> str:
        token = LINK.search((await phone.text(openid, "后台")).text).group(1)
        return f"{url}/console/login/{token}"

    office = await chromium.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    page = await office.new_page()

    # Sign in with the link chat gave: a page with one button, then 今日.
    first_link = await link_for("o_staff")
    await page.goto(first_link)
    await page.screenshot(path=ARTIFACTS / "01-login.png")
    await page.click("#enter")
    await page.wait_for_selector("text=待分流")
    assert await page.inner_text("#count-triage") == "2"
    await page.screenshot(path=ARTIFACTS / "02-today.png", full_page=True)

    # The ledger: choosing a sub-item filters at once; a search narrows it to the one need.
    await page.click("nav >> text=台账")
    await page.wait_for_selector("#filters")
    await page.select_option("select[name=item]", "JZ-05")
    await page.wait_for_url(re.compile(r"item=JZ-05"))
    await page.fill("input[name=q]", "楼道灯")
    await page.click("#apply")
    await page.wait_for_url(re.compile(r"q=%E6%A5%BC"))
    assert "共 1 条" in await page.inner_text("h1")
    await page.screenshot(path=ARTIFACTS / "03-ledger.png", full_page=True)

    # Export what is filtered and read the sheet back.
    async with page.expect_download() as download:
        await page.click("#export-xlsx")
    saved = Path(await (await download.value).path())
    sheet = openpyxl.load_workbook(io.BytesIO(await asyncio.to_thread(saved.read_bytes))).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][0] == "编号" and [r[0] for r in rows[1:]] == [need.ticket]

    # Open the need; triage it B, post progress, resolve it.
    await page.click(f"text={need.ticket}")
    await page.wait_for_selector("#form-triage")
    await page.screenshot(path=ARTIFACTS / "04-need.png", full_page=True)
    await page.check("#form-triage input[value=B]")
    await page.click("#form-triage button")
    await page.wait_for_selector("#done")
    assert await page.inner_text("#done") == "已分流定级。"
    await page.fill("#form-progress textarea", "已联系物业，明天上午维修。")
    await page.click("#form-progress button")
    await page.wait_for_selector("#done >> text=已登记进展")
    # Refused (a colleague resolved it in chat meanwhile): the reason shows, and what was typed is still there.
    typed = "已联系电工师傅，约好周六上午上门更换灯具。"
    await page.fill("#form-resolve textarea", typed)
    await resolve_need(db, await actor_for(db, staff.id), need.ticket, "已更换楼道灯。", clock.now())
    await page.click("#form-resolve button")
    await page.wait_for_selector("#error")
    # Its form is gone with the resolution: the words are shown under the reason, to copy.
    assert typed in await page.inner_text("#typed")
    await page.screenshot(path=ARTIFACTS / "05a-refused-keeps-typed.png", full_page=True)
    await page.goto(f"{url}/console/needs/{need.ticket}")
    assert await page.query_selector("#typed") is None  # once only
    # A refused form still on the page gets back what was typed into it, to mend rather than retype.
    await page.goto(f"{url}/console/points")
    await page.fill("#form-lookup input[name=phone]", "139123")
    await page.click("#form-lookup button")
    await page.wait_for_selector("#error")
    assert await page.input_value("#form-lookup input[name=phone]") == "139123"
    await page.goto(f"{url}/console/needs/{need.ticket}")
    assert "已办结" in await page.inner_text("#timeline")
    await page.screenshot(path=ARTIFACTS / "05-need-resolved.png", full_page=True)
    assert (await find_need(db, need.ticket)).status == NeedStatus.RESOLVED.value

    texts = await _pushes(fake_wechat, "o_res", "已更换楼道灯")
    assert any("已联系物业，明天上午维修" in t for t in texts)

    # A form whose CSRF token is gone is refused, and nothing happens.
    await page.goto(f"{url}/console/needs/{need.ticket}")
    await page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    await page.click("#reveal")
    await page.wait_for_selector("text=页面已过期")
    await page.screenshot(path=ARTIFACTS / "06-csrf-refused.png")

    # On a phone the same file reads in one column.
    mobile = await chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    small = await mobile.new_page()
    await small.goto(await link_for("o_staff"))
    await small.click("#enter")
    await small.wait_for_selector("text=待分流")
    await small.goto(f"{url}/console/needs/{need.ticket}")
    await small.screenshot(path=ARTIFACTS / "07-need-phone.png", full_page=True)
    assert await small.evaluate("document.documentElement.scrollWidth") <= 390
    await mobile.close()

    # The link already used, and one left past its 10 minutes, sign nobody in.
    elsewhere = await chromium.new_context()
    tab = await elsewhere.new_page()
    await tab.goto(first_link)
    await tab.click("#enter")
    await tab.wait_for_selector("text=这个登录链接无效或已用过")
    await tab.screenshot(path=ARTIFACTS / "08-link-reused.png")
    stale = await issue_link(db, await actor_for(db, staff.id), staff.id, clock.now())
    clock.advance(minutes=11)
    await tab.goto(f"{url}/console/login/{stale}")
    await tab.click("#enter")
    await tab.wait_for_selector("text=这个登录链接已过期")
    await elsewhere.close()

    # Staff of another community: that need's URL is 404.
    south = await chromium.new_context()
    tab = await south.new_page()
    await tab.goto(await link_for("o_other"))
    await tab.click("#enter")
    await tab.wait_for_selector("text=待分流")
    response = await tab.goto(f"{url}/console/needs/{need.ticket}")
    assert response.status == 404 and "楼道灯" not in await tab.content()
    await tab.screenshot(path=ARTIFACTS / "09-other-community-404.png")
    await south.close()
    await office.close()
