"""The conversation engine through the gateway: leaving flows, the menu anywhere, hints, retries, expiry, roles,
and custom-menu clicks that start the same flow as the numbered menu."""

from __future__ import annotations

import time

import pytest

from bot.simulator import Phone
from handlers import basics, menu
from handlers.framework import UNKNOWN_HINT, Context, Engine, Router
from storage.residents import find_resident
from storage.roles import Role
from tests.factories import grant, make_resident

booking = Router("booking", "议事预约")

SLOT_QUESTION = "请选择场次：\n1. 上午场\n2. 下午场"
PEOPLE_QUESTION = "请问几位参加？（回复1-3）"


@booking.menu(10, "议事预约", key="TEST_BOOKING")
@booking.command("预约")
async def start_booking(ctx: Context) -> str:
    return ctx.ask(SLOT_QUESTION, booking.step("slot"))


@booking.state("slot")
async def pick_slot(ctx: Context) -> str:
    slots = {"1": "上午场", "2": "下午场"}
    if ctx.text not in slots:
        return ctx.retry("请回复数字 1 或 2。")
    return ctx.ask(PEOPLE_QUESTION, booking.step("people"), slot=slots[ctx.text])


@booking.state("people")
async def pick_people(ctx: Context) -> str:
    if ctx.text not in ("1", "2", "3"):
        return ctx.retry("人数请回复 1 到 3 之间的数字。")
    return ctx.done(f"已为您预约{ctx.data['slot']}，{ctx.text}人。")


@booking.menu(20, "审核议题", key="TEST_REVIEW", roles=Role.COMMUNITY_STAFF)
async def review_topics(ctx: Context) -> str:
    return "待审核议题：0 条。"


@pytest.fixture
async def resident(bot_server, settings, db, kv, clock):
    """A phone talking to a bot whose engine has the booking flow next to the real menu and basics routers."""
    bot, url = bot_server
    bot.gateway.engine = Engine([booking, menu.router, basics.router], db, kv, clock, settings, bot.services)
    phone = Phone(url, settings)

    async def say(openid: str, text: str) -> str:
        answer = await phone.text(openid, text)
        assert answer.status == 200
        return answer.text

    say.phone = phone
    yield say
    await phone.close()


async def test_resident_leaves_a_flow_halfway_with_quxiao_and_is_told_which(resident, kv):
    assert await resident("o_cancel", "预约") == SLOT_QUESTION
    assert await resident("o_cancel", "1") == PEOPLE_QUESTION
    reply = await resident("o_cancel", "取消")
    assert "已退出「议事预约」" in reply
    assert await kv.get("state:o_cancel") is None
    # The next answer is no longer read as the number of people.
    assert await resident("o_cancel", "2") == UNKNOWN_HINT
    assert "当前没有进行中的操作" in await resident("o_cancel", "退出")


async def test_the_menu_shows_anywhere_and_a_number_starts_that_flow(resident):
    await resident("o_menu", "预约")
    left, shown = (await resident("o_menu", "菜单")).split("\n", 1)  # mid-flow: it says the flow was left
    assert left == "（已退出「议事预约」。）"
    assert shown.splitlines()[1:3] == ["1. 议事预约", "2. 审核议题"]
    assert "取消" in shown
    assert await resident("o_menu", "１") == SLOT_QUESTION  # full-width digit from a Chinese keyboard
    assert await resident("o_menu", "帮助") == "（已退出「议事预约」。）\n" + shown
    assert await resident("o_menu", "预约") == SLOT_QUESTION  # not a number: read as a fresh message


async def test_unknown_input_gets_a_short_hint(resident):
    assert await resident("o_hint", "今天天气怎么样") == UNKNOWN_HINT


async def test_a_wrong_answer_gets_a_hint_and_the_same_question_and_answers_so_far_are_kept(resident):
    await resident("o_retry", "预约")
    assert await resident("o_retry", "周末") == "请回复数字 1 或 2。\n\n" + SLOT_QUESTION
    assert await resident("o_retry", "2") == PEOPLE_QUESTION
    assert await resident("o_retry", "十个") == "人数请回复 1 到 3 之间的数字。\n\n" + PEOPLE_QUESTION
    assert await resident("o_retry", "3") == "已为您预约下午场，3人。"
    assert await resident("o_retry", "3") == UNKNOWN_HINT  # the flow is over


async def test_after_30_idle_minutes_the_flow_expires_and_the_resident_is_told(resident, clock):
    await resident("o_idle", "预约")
    await resident("o_idle", "1")
    clock.advance(minutes=31)
    reply = await resident("o_idle", "2")
    # "2" is not taken as the number of people, nor met with 「没太明白」 under the notice that says why.
    assert reply == "（您在「议事预约」中停留超过30分钟，已自动退出。）\n回复「菜单」查看全部服务。"


async def test_a_flow_step_within_30_minutes_continues(resident, clock):
    await resident("o_awhile", "预约")
    clock.advance(minutes=20)
    assert await resident("o_awhile", "1") == PEOPLE_QUESTION


async def test_a_staff_only_entry_is_refused_politely_to_a_resident_and_open_to_staff(resident, db):
    refused = await resident("o_plain", "2")  # no flow: a bare number is not a command
    assert refused == UNKNOWN_HINT
    await resident("o_plain", "菜单")
    refused = await resident("o_plain", "2")
    assert refused == "抱歉，「审核议题」仅限社区工作人员使用。如需开通请联系社区。"
    staff = await make_resident(db, "o_staff")
    await grant(db, staff, Role.COMMUNITY_STAFF, scope_id=1)
    await resident("o_staff", "菜单")
    assert await resident("o_staff", "2") == "待审核议题：0 条。"


async def test_the_custom_menu_click_starts_the_same_flow_as_the_number_even_mid_flow(resident):
    phone = resident.phone
    clicked = await phone.click("o_click", "TEST_BOOKING")
    await resident("o_number", "菜单")
    by_number = await resident("o_number", "1")
    assert clicked.text == by_number == SLOT_QUESTION
    await resident("o_click", "2")
    # Mid-flow the click starts afresh. (A second click in the same second would be taken for WeChat's retry:
    # events carry no MsgId, so sender + CreateTime + key is all there is.)
    restarted = await phone.event("o_click", "CLICK", "TEST_BOOKING", create_time=int(time.time()) + 1)
    assert restarted.text == SLOT_QUESTION
    assert await resident("o_click", "1") == PEOPLE_QUESTION
    refused = await phone.click("o_click", "TEST_REVIEW")
    assert "仅限社区工作人员" in refused.text


async def test_following_creates_the_resident_and_welcomes_them_and_unfollowing_is_silent(resident, db):
    phone = resident.phone
    welcome = await phone.follow("o_new", scene="B1")
    assert welcome.text == basics.WELCOME
    row = await find_resident(db, "o_new")
    assert row is not None and row.subscribed
    gone = await phone.event("o_new", "unsubscribe")
    assert (gone.status, gone.raw) == (200, "success")
    assert not (await find_resident(db, "o_new")).subscribed


async def test_a_photo_or_location_outside_a_flow_gets_guidance(resident):
    phone = resident.phone
    assert "收到您的图片" in (await phone.image("o_media")).text
    assert "收到您的位置" in (await phone.location("o_media", 37.53, 121.39, "大海阳社区")).text


async def test_every_message_refreshes_last_contact_and_first_contact_creates_the_resident(resident, db, clock):
    await resident("o_contact", "你好")
    first = await find_resident(db, "o_contact")
    assert first is not None and first.last_contact_at == clock.now()
