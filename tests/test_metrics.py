"""/metrics (Prometheus text, behind a bearer token) counts what happens, and every log line written for a
message carries that message's request id."""

from __future__ import annotations

import asyncio
import io
import logging
import re

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import Settings
from bot.logging_setup import RequestIdFilter, TextFormatter, install_phone_mask
from bot.metrics import Metrics
from bot.simulator import Phone
from scheduler.registry import Job
from scheduler.runner import SchedulerRunner, job_context
from storage.db import Database
from storage.kv import RedisLimits, RedisStore, StoreUnavailable
from storage.outbox import NoticeKind, enqueue
from tests.conftest import start_bot
from tests.factories import make_district, make_resident

TOKEN = "metrics-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(fake_wechat) -> Settings:
    return Settings(wechat_token="stewardtest", wechat_api_base=fake_wechat.base_url, metrics_token=TOKEN)


async def scrape(url: str) -> dict[tuple[str, tuple], float]:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics", headers=AUTH) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_need_the_token_and_are_absent_without_one(bot_server, settings, db, kv, clock):
    _bot, url = bot_server
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/metrics") as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        async with http.get(url + "/metrics", headers={"Authorization": "Bearer metrics-token-wrong-000"}) as resp:
            assert resp.status == 401
        async with http.get(url + "/metrics", headers=AUTH) as resp:
            assert resp.status == 200 and "steward_messages_total" in await resp.text()

    other, runner, other_url = await start_bot(settings.replace(metrics_token=None), db, kv, clock)
    try:
        async with aiohttp.ClientSession() as http, http.get(other_url + "/metrics", headers=AUTH) as resp:
            assert resp.status == 404
    finally:
        await other.wechat.close()
        await runner.cleanup()


async def test_a_message_a_retry_and_a_late_reply_are_counted(settings, db, kv, clock):
    bot, runner, url = await start_bot(settings, db, kv, clock, reply_deadline=0.3)
    phone = Phone(url, settings)
    try:
        first = await phone.text("o_m1", "菜单", msg_id=700001)
        again = await phone.text("o_m1", "菜单", msg_id=700001)  # WeChat's retry of the same message
        # the retry gets the same reply; only its CreateTime may differ, when the second ticks between the two
        assert first.raw != "success" and again.text == first.text

        handle = bot.engine.handle

        async def slow(msg, held=None):
            await asyncio.sleep(0.6)
            return await handle(msg, held)

        bot.engine.handle = slow
        late = await phone.text("o_m2", "菜单", msg_id=700002)
        assert late.raw == "success"
        await bot.gateway.drain(5)

        samples = await scrape(url)
        assert value(samples, "steward_messages_total", type="text", outcome="replied") == 1
        assert value(samples, "steward_messages_total", type="text", outcome="duplicate") == 1
        assert value(samples, "steward_messages_total", type="text", outcome="late") == 1
        assert value(samples, "steward_dedup_hits_total") == 1
        assert value(samples, "steward_reply_fallbacks_total") == 1
        assert value(samples, "steward_handler_seconds_count") == 2  # the retry ran no handler
        assert value(samples, "steward_handler_seconds_bucket", le="0.5") == 1  # the slow one took 0.6 s
    finally:
        await phone.close()
        await bot.gateway.drain(5)
        await bot.wechat.close()
        await runner.cleanup()


async def test_outbox_sends_wechat_errors_and_scheduler_runs_are_counted(bot_server, db, clock, fake_wechat):
    bot, url = bot_server
    district = await make_district(db)
    resident = await make_resident(db, "o_out", district.buildings["B1"])
    async with db.write() as s:
        await enqueue(s, NoticeKind.REPLY, "您好", [(resident.id, "m:1"), (resident.id, "m:2")], clock.now())
    samples = await scrape(url)
    assert value(samples, "steward_outbox_messages", state="pending", kind=NoticeKind.REPLY.value) == 2

    await bot.wechat.send_text("o_out", "一条")
    fake_wechat.fail_next(45047)
    with pytest.raises(Exception, match="45047"):
        await bot.wechat.send_text("o_out", "两条")

    async def fine(_ctx):
        return 3

    async def broken(_ctx):
        raise RuntimeError("job broke")

    runner = SchedulerRunner(job_context(bot), jobs={"ok": Job("ok", 3600, fine), "bad": Job("bad", 3600, broken)})
    bot.services["metrics"].watch(runner=runner)
    await runner.tick()

    samples = await scrape(url)
    assert value(samples, "steward_send_seconds_count", channel="text") == 2
    assert value(samples, "steward_wechat_api_errors_total", code="45047") == 1
    assert value(samples, "steward_scheduler_leader") == 1
    assert value(samples, "steward_scheduler_job_runs_total", job="ok", outcome="ok") == 1
    assert value(samples, "steward_scheduler_job_runs_total", job="bad", outcome="failed") == 1
    assert value(samples, "steward_database_errors_total") == 0


async def test_database_and_redis_errors_are_counted():
    db = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")  # nothing listens on port 1
    kv = RedisStore("redis://127.0.0.1:1/0", limits=RedisLimits(timeout=0.5, pool_wait=0.5))
    metrics = Metrics()
    metrics.watch(db=db, kv=kv)
    try:
        with pytest.raises(Exception):  # noqa: B017 - whichever the driver raises, it counts
            async with db.read() as s:
                await s.connection()
        with pytest.raises(StoreUnavailable):
            await kv.get("x")
        text = (await metrics.render()).decode()
    finally:
        await db.dispose()
        await kv.close()
    assert "steward_database_errors_total 2.0" in text  # the read and the outbox count of the scrape
    assert "steward_redis_errors_total 1.0" in text


async def test_each_message_logs_under_its_own_request_id_with_phones_masked(phone, bot_server):
    bot, _url = bot_server
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(TextFormatter())
    install_phone_mask(handler)
    logger = logging.getLogger("steward")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    handle = bot.engine.handle

    async def logging_handle(msg, held=None):
        logging.getLogger("steward.engine").info("handling for %s", "13812345678")
        return await handle(msg, held)

    bot.engine.handle = logging_handle
    try:
        await phone.text("o_log1", "菜单")
        await phone.text("o_log2", "菜单")
        logging.getLogger("steward.test").info("outside any message")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = out.getvalue().splitlines()
    inside = [line for line in lines if "handling for" in line]
    done = [line for line in lines if "message type=text outcome=replied" in line]
    assert len(inside) == 2 and len(done) == 2
    ids = [re.search(r"request_id=([0-9a-f]{12})$", line).group(1) for line in inside]
    assert ids[0] != ids[1]
    assert [re.search(r"request_id=([0-9a-f]{12})$", line).group(1) for line in done] == ids
    assert all("138****5678" in line and "13812345678" not in line for line in inside)
    assert next(line for line in lines if "outside any message" in line).endswith("outside any message")
