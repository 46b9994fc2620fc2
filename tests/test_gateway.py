"""The gateway end to end, in plain and safe mode: replies in the request's mode, each message handled once,
the 4-second fallback by customer-service message, hostile bodies, per-resident isolation, health."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import pytest
import xmltodict

from bot.app import Bot
from bot.protocol import MAX_BODY, sign
from bot.simulator import Phone, message_xml
from handlers import ROUTERS
from handlers.framework import ERROR_REPLY, Context, Engine, Router
from storage.db import Database
from storage.kv import RedisStore
from storage.residents import find_resident
from tests.conftest import start_bot

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


@dataclass
class Probe:
    """Test handlers that count their runs and can be held mid-step."""

    calls: Counter = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def router(self) -> Router:
        router = Router("probe", "测试流程")

        @router.command("计数")
        async def count(ctx: Context) -> str:
            self.calls["count"] += 1
            self.log.append(f"count:{ctx.msg.openid}")
            return f"这是第{self.calls['count']}次处理。"

        @router.command("稍慢")
        async def a_little_slow(ctx: Context) -> str:
            self.calls["a_little_slow"] += 1
            await asyncio.sleep(0.15)  # long enough for concurrent duplicates to overlap it
            return f"稍慢处理第{self.calls['a_little_slow']}次。"

        @router.command("慢")
        async def slow(ctx: Context) -> str:
            self.calls["slow"] += 1
            self.log.append("slow:start")
            self.started.set()
            await self.gate.wait()
            self.log.append("slow:end")
            return "您的申请已经处理好了。"

        @router.click("PROBE_CLICK")
        async def click(ctx: Context) -> str:
            self.calls["click"] += 1
            return "收到菜单点击。"

        return router


@dataclass
class Rig:
    bot: Bot
    url: str
    phone: Phone
    probe: Probe
    safe: bool


@pytest.fixture(params=["plain", "safe"])
async def make_rig(request, settings, db, kv, clock):
    """start(reply_deadline=...) → a running bot whose engine also has the probe router."""
    safe = request.param == "safe"
    mode_settings = settings.replace(wechat_aes_key=AES_KEY) if safe else settings
    started: list[tuple] = []

    async def start(reply_deadline: float = 4.0) -> Rig:
        bot, runner, url = await start_bot(mode_settings, db, kv, clock, reply_deadline=reply_deadline)
        probe = Probe()
        bot.gateway.engine = Engine([probe.router(), *ROUTERS], db, kv, clock, mode_settings, bot.services)
        phone = Phone(url, mode_settings)
        started.append((bot, runner, phone, probe))
        return Rig(bot, url, phone, probe, safe)

    yield start
    for bot, runner, phone, probe in started:
        probe.gate.set()
        await bot.gateway.drain(5)
        await phone.close()
        await bot.wechat.close()
        await runner.cleanup()


async def wait_until(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


# -- replies in the request's mode --------------------------------------------------------------------------


async def test_resident_asks_for_the_menu_and_the_reply_comes_back_in_the_requests_mode(make_rig):
    rig = await make_rig()
    answer = await rig.phone.text("o_mode", "菜单")
    assert answer.status == 200
    assert "请回复数字" in answer.text  # the Phone decrypted it in safe mode
    envelope = xmltodict.parse(answer.raw)["xml"]
    if rig.safe:
        assert set(envelope) >= {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
        assert "请回复数字" not in answer.raw
    else:
        assert envelope["ToUserName"] == "o_mode"
        assert envelope["MsgType"] == "text"


async def test_a_request_in_the_other_mode_is_refused(make_rig):
    rig = await make_rig()
    query = rig.phone.signed_query()
    body = message_xml("o_wrongmode", "text", {"Content": "菜单", "MsgId": 4711})
    async with aiohttp.ClientSession() as http:
        if rig.safe:  # a safe-mode account never takes plain callbacks
            async with http.post(rig.url + "/wechat", params=query, data=body) as r:
                assert r.status == 403
        else:  # an encrypted callback to a plain account cannot be read
            params = {**query, "encrypt_type": "aes", "msg_signature": "0" * 40}
            async with http.post(rig.url + "/wechat", params=params, data=b"<xml><Encrypt>abcd</Encrypt></xml>") as r:
                assert r.status == 400


async def test_a_safe_mode_callback_with_a_forged_msg_signature_is_forbidden(make_rig):
    rig = await make_rig()
    if not rig.safe:
        return await _plain_forged_signature_is_forbidden(rig)
    crypto = rig.phone._crypto
    query = rig.phone.signed_query()
    xml = message_xml("o_forged", "text", {"Content": "菜单", "MsgId": 4712})
    envelope = xmltodict.parse(crypto.encrypt_message(xml, query["nonce"], query["timestamp"]))["xml"]
    body = f"<xml><Encrypt><![CDATA[{envelope['Encrypt']}]]></Encrypt></xml>"
    params = {**query, "encrypt_type": "aes", "msg_signature": "f" * 40}
    async with aiohttp.ClientSession() as http, http.post(rig.url + "/wechat", params=params, data=body) as r:
        assert r.status == 403
    assert rig.probe.calls == Counter()


async def _plain_forged_signature_is_forbidden(rig: Rig) -> None:
    query = rig.phone.signed_query()
    query["signature"] = sign("wrong-token", query["timestamp"], query["nonce"])
    body = message_xml("o_forged", "text", {"Content": "计数", "MsgId": 4713})
    async with aiohttp.ClientSession() as http, http.post(rig.url + "/wechat", params=query, data=body) as r:
        assert r.status == 403
    assert rig.probe.calls["count"] == 0


# -- retries ------------------------------------------------------------------------------------------------


async def test_wechat_retrying_a_message_gets_the_same_reply_and_the_handler_runs_once(make_rig):
    rig = await make_rig()
    first = await rig.phone.text("o_retry", "计数", msg_id=900001)
    again = await rig.phone.text("o_retry", "计数", msg_id=900001)
    third = await rig.phone.text("o_retry", "计数", msg_id=900001)
    assert first.text == again.text == third.text == "这是第1次处理。"
    assert rig.probe.calls["count"] == 1
    fresh = await rig.phone.text("o_retry", "计数", msg_id=900002)
    assert fresh.text == "这是第2次处理。"


async def test_a_message_costs_two_store_calls_its_claim_with_the_lock_and_its_reply_with_the_release(make_rig, kv):
    # Claim the message as the resident's lock is taken (reading what the step needs), release the lock with the
    # next state and the reply: a WeChat retry finds the reply stored the moment the lock is free.
    rig = await make_rig()
    await rig.phone.text("o_calls", "菜单")  # a known resident: their cached row is read with the lock
    calls: list[str] = []
    if isinstance(kv, RedisStore):
        real = kv._call

        async def counted(make):
            calls.append("call")
            return await real(make)

        kv._call = counted
    answer = await rig.phone.text("o_calls", "计数", msg_id=900050)
    assert answer.text == "这是第1次处理。"
    if isinstance(kv, RedisStore):
        assert len(calls) == 2
        # A first contact too: its new row's copy goes with the release, not in a call of its own.
        calls.clear()
        assert "请回复数字" in (await rig.phone.text("o_calls_new", "菜单")).text
        assert len(calls) == 2
        assert await kv.get("resident:o_calls_new") is not None
    assert await kv.get("seen:id:900050") == "这是第1次处理。"
    again = await rig.phone.text("o_calls", "计数", msg_id=900050)
    assert again.text == answer.text and rig.probe.calls["count"] == 1


async def test_a_retried_menu_click_event_is_handled_once(make_rig):
    rig = await make_rig()
    created = int(time.time())
    first = await rig.phone.event("o_click", "CLICK", "PROBE_CLICK", create_time=created)
    again = await rig.phone.event("o_click", "CLICK", "PROBE_CLICK", create_time=created)
    assert first.text == again.text == "收到菜单点击。"
    assert rig.probe.calls["click"] == 1
    other_resident = await rig.phone.event("o_click2", "CLICK", "PROBE_CLICK", create_time=created)
    assert other_resident.text == "收到菜单点击。"
    assert rig.probe.calls["click"] == 2


async def test_concurrent_duplicate_deliveries_run_the_handler_once(make_rig):
    rig = await make_rig()
    answers = await asyncio.gather(*(rig.phone.text("o_dupes", "稍慢", msg_id=900100) for _ in range(4)))
    assert {a.status for a in answers} == {200}
    assert {a.text for a in answers} == {"稍慢处理第1次。"}
    assert rig.probe.calls["a_little_slow"] == 1


# -- the 4-second fallback -----------------------------------------------------------------------------------


async def test_a_slow_step_answers_success_and_the_reply_arrives_by_customer_service_message(make_rig, fake_wechat):
    rig = await make_rig(reply_deadline=0.2)
    answer = await rig.phone.text("o_slow", "慢", msg_id=900200)
    assert (answer.status, answer.raw, answer.text) == (200, "success", "")
    assert fake_wechat.texts_to("o_slow") == []
    # WeChat retries while the step still runs: it gets `success` again, the step is not run a second time.
    retry = await rig.phone.text("o_slow", "慢", msg_id=900200)
    assert retry.raw == "success"
    rig.probe.gate.set()
    await rig.bot.gateway.drain(5)
    assert fake_wechat.texts_to("o_slow") == ["您的申请已经处理好了。"]
    late_retry = await rig.phone.text("o_slow", "慢", msg_id=900200)
    assert late_retry.raw == "success"
    assert rig.probe.calls["slow"] == 1
    assert fake_wechat.texts_to("o_slow") == ["您的申请已经处理好了。"]


async def test_a_retry_arriving_during_a_slow_step_is_not_run_again(make_rig, fake_wechat):
    rig = await make_rig(reply_deadline=0.3)
    first = asyncio.create_task(rig.phone.text("o_slow2", "慢", msg_id=900300))
    await asyncio.wait_for(rig.probe.started.wait(), 3)
    retry = await rig.phone.text("o_slow2", "慢", msg_id=900300)
    assert retry.raw == "success"
    assert (await first).raw == "success"
    rig.probe.gate.set()
    await rig.bot.gateway.drain(5)
    assert rig.probe.calls["slow"] == 1
    assert fake_wechat.texts_to("o_slow2") == ["您的申请已经处理好了。"]


# -- oversize and hostile bodies -----------------------------------------------------------------------------


async def test_a_body_over_64_kib_is_refused_with_413_with_or_without_content_length(make_rig):
    rig = await make_rig()
    big = b"<xml>" + b"a" * (MAX_BODY + 10) + b"</xml>"

    async def chunked():
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    async with aiohttp.ClientSession() as http:
        async with http.post(rig.url + "/wechat", params=rig.phone.signed_query(), data=big) as r:
            assert r.status == 413
        async with http.post(rig.url + "/wechat", params=rig.phone.signed_query(), data=chunked()) as r:
            assert r.status == 413
    assert rig.probe.calls == Counter()


HOSTILE = {
    "garbage": "this is not xml <<<",
    "truncated": "<xml><ToUserName><![CDATA[gh]]></ToUserName><FromUserName>",
    "billion laughs": (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        "<xml><ToUserName>gh</ToUserName><FromUserName>o_x</FromUserName><CreateTime>1</CreateTime>"
        "<MsgType>text</MsgType><Content>&lol2;</Content></xml>"
    ),
    "external entity": (
        '<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        "<xml><FromUserName>o_x</FromUserName><MsgType>text</MsgType><Content>&xxe;</Content></xml>"
    ),
    "no sender": "<xml><ToUserName>gh</ToUserName><CreateTime>1</CreateTime><MsgType>text</MsgType>"
    "<Content>菜单</Content><MsgId>1</MsgId></xml>",
}


@pytest.mark.parametrize("kind", list(HOSTILE))
async def test_malformed_or_hostile_xml_is_a_400_never_a_500(make_rig, kind):
    rig = await make_rig()
    answer = await rig.phone.post_xml(HOSTILE[kind])  # signed, and encrypted in safe mode
    assert answer.status == 400


def deeply_nested(depth: int, field: str = "Content") -> str:
    """A signed-looking text message `计数` with `depth` elements nested inside `field`."""
    inner = "<a>" * depth + "计数" + "</a>" * depth
    return message_xml("o_deep", "text", {"MsgId": 990000 + depth}).replace(
        "</xml>", f"<{field}>{inner}</{field}></xml>"
    )


@pytest.mark.parametrize("depth", [5, 50, 6000])  # 6,000 levels (42 KB) made str() of the parsed dict recurse: a 500
@pytest.mark.parametrize("field", ["Content", "Extra"])
async def test_a_signed_body_nested_deeper_than_wechat_ever_sends_is_a_400_and_nothing_runs(
    make_rig, db, depth, field
):
    rig = await make_rig()
    answer = await rig.phone.post_xml(deeply_nested(depth, field))  # signed, and encrypted in safe mode
    assert answer.status == 400
    assert rig.probe.calls == Counter()
    assert await find_resident(db, "o_deep") is None  # the engine never saw it (it records every sender)
    assert (await rig.phone.text("o_deep", "计数")).text == "这是第1次处理。"  # and the gateway is fine


async def test_a_body_100000_levels_deep_is_refused_without_being_parsed(make_rig, db):
    rig = await make_rig()
    started = time.monotonic()
    answer = await rig.phone.post_xml(deeply_nested(100_000))  # 700 KB: over the body limit before any parsing
    assert answer.status == 413
    assert time.monotonic() - started < 2
    unclosed = message_xml("o_deep", "text", {"MsgId": 1}).replace("</xml>", "<Content>" + "<a>" * 14_000)
    assert (await rig.phone.post_xml(unclosed)).status == 400  # as deep as 64 KiB allows, never closed
    assert rig.probe.calls == Counter()
    assert await find_resident(db, "o_deep") is None


async def test_an_entity_declaration_around_the_encrypted_envelope_is_a_400(make_rig):
    rig = await make_rig()
    if not rig.safe:
        return
    query = {**rig.phone.signed_query(), "encrypt_type": "aes", "msg_signature": "0" * 40}
    body = '<!DOCTYPE x [<!ENTITY e "e">]><xml><Encrypt><![CDATA[&e;]]></Encrypt></xml>'
    async with aiohttp.ClientSession() as http, http.post(rig.url + "/wechat", params=query, data=body) as r:
        assert r.status == 400


async def test_with_the_database_down_the_resident_is_asked_to_retry_and_a_redelivery_is_handled(make_rig, tmp_path):
    rig = await make_rig()
    engine = rig.bot.gateway.engine
    broken = Database(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db")
    working, engine.db, engine.residents.db = engine.db, broken, broken
    answer = await rig.phone.text("o_dbdown", "计数", msg_id=900400)
    assert (answer.status, answer.text) == (200, ERROR_REPLY)
    engine.db = engine.residents.db = working
    await broken.dispose()
    again = await rig.phone.text("o_dbdown", "计数", msg_id=900400)
    assert again.text == "这是第1次处理。"


# -- per-resident isolation ----------------------------------------------------------------------------------


async def test_a_residents_second_message_waits_for_the_first_while_others_are_served(make_rig):
    rig = await make_rig()
    slow = asyncio.create_task(rig.phone.text("o_busy", "慢"))
    await asyncio.wait_for(rig.probe.started.wait(), 3)
    second = asyncio.create_task(rig.phone.text("o_busy", "计数"))
    neighbour = await rig.phone.text("o_neighbour", "计数")  # another resident is not held up
    assert neighbour.text == "这是第1次处理。"
    await asyncio.sleep(0.1)  # give the second message every chance to run early
    assert "count:o_busy" not in rig.probe.log
    rig.probe.gate.set()
    assert (await slow).text == "您的申请已经处理好了。"
    assert (await second).text == "这是第2次处理。"
    busy = [entry for entry in rig.probe.log if entry != "count:o_neighbour"]
    assert busy == ["slow:start", "slow:end", "count:o_busy"]


# -- health ---------------------------------------------------------------------------------------------------


async def test_healthz_reports_database_and_redis(make_rig, tmp_path):
    rig = await make_rig()
    gateway = rig.bot.gateway
    async with aiohttp.ClientSession() as http:
        async with http.get(rig.url + "/healthz") as r:
            assert (r.status, await r.json()) == (200, {"database": "ok", "redis": "not configured (in-memory state)",
                                                        "worker": os.getpid()})
        gateway.settings = gateway.settings.replace(redis_url="redis://127.0.0.1:6379/0")
        async with http.get(rig.url + "/healthz") as r:
            assert (r.status, (await r.json())["redis"]) == (200, "ok")  # the store in use answers
        unreachable = RedisStore("redis://127.0.0.1:1/0")  # nothing listens on port 1
        working_kv, gateway.kv = gateway.kv, unreachable
        async with http.get(rig.url + "/healthz") as r:
            assert (r.status, (await r.json())["redis"]) == (503, "unreachable")
        gateway.kv = working_kv
        await unreachable.close()
        broken = Database(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db")
        working_db, gateway.db = gateway.db, broken
        async with http.get(rig.url + "/healthz") as r:
            assert (r.status, (await r.json())["database"]) == (503, "unreachable")
        gateway.db = working_db
        await broken.dispose()
