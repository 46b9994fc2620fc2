"""Production under fire, against the real PostgreSQL and Redis through a TCP proxy the tests own.

Each test puts `tests.tcpproxy.TcpProxy` between the bot and each service, then cuts it (connections reset),
freezes it (no byte moves, nothing answers) or restores it, and checks what a resident is told against what
the database holds: every callback answered within WeChat's 5 s and never with a 500; a change that committed
reported as saved; a step that failed after `success` followed by a push; normal answers within seconds of the
service's return; a resident's two steps never at once.

They run where STEWARD_TEST_DATABASE_URL and STEWARD_TEST_REDIS_URL are set (as .ci/run does).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections import Counter

import aiohttp
import pytest
from sqlmodel import select

import bot.gateway as gateway_module
import handlers.needs as needs_handlers
from bot.gateway import LATE_FAILED
from bot.simulator import Phone, message_xml
from handlers.framework import BUSY_REPLY, Context, Router
from storage.classifier import default_classifier
from storage.db import Database, DatabaseLimits
from storage.kv import Claim, LockTimeout, RedisLimits, RedisStore, StoreUnavailable
from storage.needs import Need
from tests.conftest import PG_URL, REDIS_URL, RUN_ID, _pg_async_url, empty_postgres, start_bot
from tests.factories import make_district, make_resident
from tests.tcpproxy import TcpProxy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (PG_URL and REDIS_URL), reason="fault tests need PostgreSQL and Redis"),
]

WECHAT_WINDOW = 5.0  # WeChat gives up on an answer after this long
REDIS_LIMITS = RedisLimits(pool_size=64, pool_wait=1.0, timeout=0.5, cooldown=0.3)
DB_LIMITS = DatabaseLimits(pool_size=10, max_overflow=10, pool_wait=3.0, connect_timeout=1.0, command_timeout=1.0)


@pytest.fixture(scope="module", autouse=True)
def _warm_classifier():
    default_classifier().warm_up()


class Rig:
    """A running bot whose PostgreSQL and Redis both sit behind proxies the test controls."""

    def __init__(self, settings, pg_schema, clock) -> None:
        self.settings, self.pg_schema, self.clock = settings, pg_schema, clock
        self.started: list = []
        self.stores: list[RedisStore] = []

    async def start(self) -> Rig:
        host, port = _host_port(PG_URL, 5432)
        self.pg = await TcpProxy(host, port).start()
        rhost, rport = _host_port(REDIS_URL, 6379)
        self.redis = await TcpProxy(rhost, rport).start()
        # Verification goes around the proxies: what the database really holds.
        self.truth = Database(_pg_async_url(PG_URL), schema=self.pg_schema)
        await empty_postgres(self.truth)
        self.db = Database(self.pg.url_for(_pg_async_url(PG_URL)), schema=self.pg_schema, limits=DB_LIMITS)
        self.kv = RedisStore(self.redis.url_for(REDIS_URL), prefix=f"steward-fault:{RUN_ID}:{time.time_ns()}:",
                             limits=REDIS_LIMITS)
        self.settings = self.settings.replace(redis_url=self.redis.url_for(REDIS_URL))
        return self

    async def bot(self, reply_deadline: float = 4.0, routers: list[Router] | None = None, own_store: bool = False):
        """A worker; `own_store` gives it a Redis client of its own, as a second process would have."""
        kv = self.kv
        if own_store:
            kv = RedisStore(self.redis.url_for(REDIS_URL), prefix=self.kv.prefix, limits=REDIS_LIMITS)
            self.stores.append(kv)
        bot, runner, url = await start_bot(self.settings, self.db, kv, self.clock, reply_deadline=reply_deadline)
        for router in routers or []:
            bot.engine._include(router)
        self.started.append((bot, runner))
        return bot, url

    async def stop(self) -> None:
        self.pg.restore()
        self.redis.restore()
        for bot, runner in self.started:
            await bot.gateway.drain(5)
            await bot.wechat.close()
            await runner.cleanup()
        for store in [self.kv, *self.stores]:
            await store.close()
        await self.db.dispose()
        await self.truth.dispose()
        await self.pg.stop()
        await self.redis.stop()

    async def needs(self) -> list[Need]:
        async with self.truth.read() as s:
            return list((await s.exec(select(Need).order_by(Need.id))).all())


def _host_port(url: str, default: int) -> tuple[str, int]:
    hostpart = url.split("://", 1)[1].rpartition("@")[2].split("/", 1)[0]
    host, _, port = hostpart.partition(":")
    return host or "127.0.0.1", int(port or default)


@pytest.fixture
async def rig(settings, pg_schema, clock):
    r = await Rig(settings, pg_schema, clock).start()
    yield r
    await r.stop()


async def _timed(coro):
    started = time.monotonic()
    result = await coro
    return result, time.monotonic() - started


async def _health(url: str) -> tuple[int, dict, float]:
    started = time.monotonic()
    async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as answer:
        return answer.status, await answer.json(), time.monotonic() - started


async def _reporter(rig: Rig, openid: str = "o_li", phone_number: str = "13800138001"):
    d = await make_district(rig.truth)
    return await make_resident(rig.truth, openid, d.buildings["B1"], room="301", phone=phone_number)


async def _to_confirm(phone: Phone, openid: str, text: str = "3单元楼道灯坏了，晚上上楼看不见") -> None:
    assert "描述" in (await phone.text(openid, "反映")).text
    assert "1. 是" in (await phone.text(openid, text)).text
    assert "照片" in (await phone.text(openid, "1")).text
    assert "1. 确认提交" in (await phone.text(openid, "跳过")).text


# -- 1. bursts -------------------------------------------------------------------------------------------------


async def test_a_thousand_residents_at_once_and_a_thousand_messages_from_one_get_no_500(
    settings, pg_schema, clock, fake_wechat
):
    """The production pools (default limits), no proxy: the burst itself is the fault."""
    db = Database(_pg_async_url(PG_URL), schema=pg_schema)
    await empty_postgres(db)
    kv = RedisStore(REDIS_URL, prefix=f"steward-burst:{RUN_ID}:{time.time_ns()}:")
    settings = settings.replace(redis_url=REDIS_URL)
    bot, runner, url = await start_bot(settings, db, kv, clock)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            phone = Phone(url, settings, session=http)
            answers = await asyncio.gather(*(phone.text(f"o_burst_{i}", "菜单") for i in range(1000)))
            assert Counter(a.status for a in answers) == {200: 1000}
            # Each got the menu, `success` (the menu follows by push) or a polite busy text; never an error page.
            kinds = Counter("menu" if "请回复数字" in a.text else a.text or "success" for a in answers)
            assert set(kinds) <= {"menu", "success", BUSY_REPLY}, kinds
            late = [f"o_burst_{i}" for i, a in enumerate(answers) if a.text == ""]
            deadline = time.monotonic() + 30
            while any(not fake_wechat.texts_to(o) for o in late) and time.monotonic() < deadline:
                await bot.services["sender"].drain()  # as the scheduler process does
                await asyncio.sleep(0.2)
            assert all(fake_wechat.texts_to(o) for o in late), "a resident answered `success` heard nothing more"

            one = await asyncio.gather(*(phone.text("o_burst_same", "菜单", msg_id=10_000 + i) for i in range(1000)))
            assert Counter(a.status for a in one) == {200: 1000}
            assert set(Counter("menu" if "请回复数字" in a.text else a.text or "success" for a in one)) <= {
                "menu", "success", BUSY_REPLY, gateway_module.WAIT_REPLY}
    finally:
        await bot.gateway.drain(10)
        await bot.wechat.close()
        await runner.cleanup()
        keys = [k async for k in kv.client.scan_iter(match=kv.prefix + "*", count=500)]
        if keys:
            await kv.client.delete(*keys)
        await kv.close()
        await db.dispose()


# -- 2. outages degrade, never lie -----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["cut", "freeze"])
async def test_while_redis_is_away_every_message_is_answered_busy_in_time_and_health_says_so(rig, fault):
    _bot, url = await rig.bot()
    await _reporter(rig)
    phone = Phone(url, rig.settings)
    try:
        assert "回复" in (await phone.text("o_li", "菜单")).text
        getattr(rig.redis, fault)()
        answers = []
        for i in range(6):
            answer, took = await _timed(phone.text("o_li", f"菜单{i}" if i % 2 else "我的诉求"))
            answers.append(answer)
            assert answer.status == 200 and took < WECHAT_WINDOW, (answer.status, took)
        assert {a.text for a in answers} <= {BUSY_REPLY, ""}
        status, body, took = await _health(url)
        assert (status, body["redis"], body["database"]) == (503, "unreachable", "ok") and took < 1.0

        rig.redis.restore()
        recovered = time.monotonic()
        while "回复" not in (await phone.text("o_li", "菜单")).text:
            assert time.monotonic() - recovered < 10, "not answered normally 10 s after Redis returned"
            await asyncio.sleep(0.2)
        assert (await _health(url))[0] == 200
    finally:
        await phone.close()


@pytest.mark.parametrize("fault", ["cut", "freeze"])
async def test_while_postgres_is_away_every_message_is_answered_in_time_and_nothing_is_half_saved(rig, fault):
    _bot, url = await rig.bot()
    await _reporter(rig)
    phone = Phone(url, rig.settings)
    try:
        await _to_confirm(phone, "o_li")
        getattr(rig.pg, fault)()
        answer, took = await _timed(phone.text("o_li", "1"))
        assert answer.status == 200 and took < WECHAT_WINDOW
        assert answer.text == BUSY_REPLY
        status, body, took = await _health(url)
        assert (status, body["database"], body["redis"]) == (503, "unreachable", "ok") and took < 1.0
        rig.pg.restore()
        await asyncio.sleep(0.2)
        assert await rig.needs() == []  # told "not handled": and indeed nothing was saved
        # Nothing was taken from the resident either: the same question stands and the answer now goes through.
        done = (await phone.text("o_li", "1")).text
        assert "已提交！诉求编号：20261127-0001" in done
        assert [n.ticket for n in await rig.needs()] == ["20261127-0001"]
    finally:
        await phone.close()


async def test_a_step_that_fails_after_success_was_sent_is_followed_by_a_push(rig, fake_wechat):
    _bot, url = await rig.bot(reply_deadline=0.3)
    await _reporter(rig)
    phone = Phone(url, rig.settings)
    try:
        await _to_confirm(phone, "o_li")
        fake_wechat.sent.clear()
        rig.pg.freeze()
        answer, took = await _timed(phone.text("o_li", "1"))
        assert (answer.status, answer.text) == (200, "") and took < 1.0  # `success`: WeChat shows nothing yet
        for _ in range(80):  # the failing step ends when the frozen query times out (1 s), then the push goes
            if fake_wechat.texts_to("o_li"):
                break
            await asyncio.sleep(0.1)
        assert fake_wechat.texts_to("o_li") == [LATE_FAILED.format(text="1")]
        rig.pg.restore()
        await asyncio.sleep(0.2)
        assert await rig.needs() == []
    finally:
        await phone.close()


async def test_a_report_that_committed_is_reported_saved_though_redis_dies_right_after(rig, monkeypatch):
    _bot, url = await rig.bot()
    await _reporter(rig)
    real = needs_handlers.report_need

    async def report_then_lose_redis(*args, **kwargs):
        need = await real(*args, **kwargs)
        rig.redis.cut()  # the state write, the cache drop and the lock release all fail after the commit
        return need

    monkeypatch.setattr(needs_handlers, "report_need", report_then_lose_redis)
    phone = Phone(url, rig.settings)
    try:
        await _to_confirm(phone, "o_li")
        done, took = await _timed(phone.text("o_li", "1"))
        assert took < WECHAT_WINDOW
        assert "已提交！诉求编号：20261127-0001" in done.text  # true: the database has it
        assert [n.ticket for n in await rig.needs()] == ["20261127-0001"]
        monkeypatch.setattr(needs_handlers, "report_need", real)
        rig.redis.restore()
        await asyncio.sleep(0.4)
        # The flow ended with the commit: a second "1" is not read as "submit again".
        again = (await phone.text("o_li", "1")).text
        assert "已提交" not in again
        assert len(await rig.needs()) == 1
    finally:
        await phone.close()


async def test_a_report_whose_statement_went_unanswered_is_told_unsure_then_lost_and_stays_lost(
    rig, fake_wechat, monkeypatch
):
    # On PostgreSQL a report is one statement, its own transaction: no COMMIT to lose, but the statement itself can
    # go unanswered. Here PostgreSQL's route freezes as it is sent, then comes back for new connections while the
    # statement's own bytes are still held: the follow-up must not say "not saved" while that statement can still
    # run — it ends the server process that held it first, so the held bytes, released after, save nothing.
    import storage.needs.intake as intake

    monkeypatch.setattr(gateway_module, "FOLLOW_UP_EVERY", 0.2)
    # One pooled connection, on which a neighbour's report has already prepared the statement: the held bytes are
    # then the statement's execution itself, not a first round trip to prepare it.
    await rig.db.dispose()
    rig.db = Database(rig.pg.url_for(_pg_async_url(PG_URL)), schema=rig.pg_schema,
                      limits=dataclasses.replace(DB_LIMITS, pool_size=1, max_overflow=0))
    real = intake.write_new_need

    def freeze_then_write(connection, *args):
        rig.pg.freeze()
        return real(connection, *args)

    _bot, url = await rig.bot()
    d = await make_district(rig.truth)
    await make_resident(rig.truth, "o_li", d.buildings["B1"], room="301", phone="13800138001")
    wang = await make_resident(rig.truth, "o_wang", d.buildings["B1"], room="502", phone="13800138002")
    phone = Phone(url, rig.settings)
    try:
        await _to_confirm(phone, "o_wang", "2号楼门口的垃圾桶满了，好几天没人清理")
        assert "已提交" in (await phone.text("o_wang", "1")).text
        await _to_confirm(phone, "o_li")
        monkeypatch.setattr(intake, "write_new_need", freeze_then_write)
        fake_wechat.sent.clear()
        answer, took = await _timed(phone.text("o_li", "1"))
        assert took < WECHAT_WINDOW
        assert answer.text == needs_handlers.REPORT_UNSURE
        monkeypatch.setattr(intake, "write_new_need", real)
        rig.pg.restore(held=True)
        for _ in range(100):
            if fake_wechat.texts_to("o_li"):
                break
            await asyncio.sleep(0.1)
        assert fake_wechat.texts_to("o_li") == [needs_handlers.REPORT_LOST_LATER]
        rig.pg.release()  # the statement's bytes reach PostgreSQL only now
        await asyncio.sleep(0.5)
        assert [n.reporter_id for n in await rig.needs()] == [wang.id]  # as the resident was told: not saved
        assert "已提交" not in (await phone.text("o_li", "1")).text  # and the question is not put again
        assert len(await rig.needs()) == 1
    finally:
        await phone.close()


async def test_a_commit_that_went_unanswered_is_unknown_and_settled_before_anyone_looks(rig):
    # The transaction's COMMIT is held on its way to PostgreSQL: the writer hears "unknown" (never "not saved"),
    # and once settled (its server process ended) the held COMMIT can no longer land.
    from storage.db import CommitUnknown
    from storage.residents import Resident, find_resident

    now = dt.datetime(2026, 11, 27, 9, 30, tzinfo=dt.UTC)
    with pytest.raises(CommitUnknown) as raised:
        async with rig.db.write() as s:
            s.add(Resident(openid="o_held_commit", created_at=now))
            await s.flush()
            rig.pg.freeze()
    assert raised.value.server is not None
    rig.pg.restore(held=True)
    await rig.db.settle(raised.value)
    rig.pg.release()  # the COMMIT's bytes reach PostgreSQL only now
    await asyncio.sleep(0.3)
    assert await find_resident(rig.truth, "o_held_commit") is None


# -- 3. recovery -----------------------------------------------------------------------------------------------


def _probe_router(gate: asyncio.Event, log: list[str], started: asyncio.Event) -> Router:
    router = Router("faultprobe", "测试")

    @router.command("长步骤")
    async def long_step(ctx: Context) -> str:
        log.append("start")
        started.set()
        await gate.wait()
        log.append("end")
        return "长步骤完成。"

    @router.command("短步骤")
    async def short_step(ctx: Context) -> str:
        log.append("short")
        return "短步骤完成。"

    return router


async def test_a_lock_held_when_redis_was_cut_frees_within_seconds_of_its_return(rig):
    gate, log, started = asyncio.Event(), [], asyncio.Event()
    _bot, url = await rig.bot(routers=[_probe_router(gate, log, started)])
    phone = Phone(url, rig.settings)
    try:
        held = asyncio.create_task(phone.text("o_lock", "长步骤"))
        await asyncio.wait_for(started.wait(), 5)
        rig.redis.cut()
        gate.set()  # the step ends while Redis is away: its lock cannot be released now
        assert (await held).text in ("长步骤完成。", "")
        rig.redis.restore()
        back = time.monotonic()
        for _ in range(100):
            if (await phone.text("o_lock", "短步骤")).text == "短步骤完成。":
                break
            await asyncio.sleep(0.1)
        assert time.monotonic() - back < 3  # not the lock's full life, let alone a minute
    finally:
        await phone.close()


async def test_a_lock_taken_by_a_script_that_reached_redis_after_its_release_was_retried_is_still_freed(rig):
    # A message's claim-and-lock script sent into a frozen Redis times out (the resident is told "busy"), but its
    # bytes wait in the connection and run when Redis wakes — here only after the retried release has already
    # found nothing to release. The lock it takes must still be let go within seconds, not live out its 10 s.
    kv = rig.kv
    await kv.set("warm", "x")  # a pooled connection that the freeze will hold
    rig.redis.freeze()
    claim = Claim("seen:late-take", "pending", 60)
    with pytest.raises(StoreUnavailable):
        async with kv.lock("resident:o_late", timeout=10, wait=1, claim=claim):
            pytest.fail("took a lock through a frozen Redis")
    # The resident's next message while another call probes the frozen Redis: refused here without being sent;
    # its token must not take the place of the one on its way.
    probe = asyncio.create_task(kv.get("warm"))
    await asyncio.sleep(0.05)
    with pytest.raises(StoreUnavailable) as refused:
        async with kv.lock("resident:o_late", timeout=10, wait=1, claim=Claim("seen:late-next", "pending", 60)):
            pytest.fail("took a lock through a frozen Redis")
    assert refused.value.sent is False
    with pytest.raises(StoreUnavailable):
        await probe
    rig.redis.restore(held=True)  # new connections flow; the frozen one's bytes still wait
    await asyncio.sleep(0.6)  # the release is retried (and finds nothing: the take has not run yet)
    rig.redis.release()  # the take runs now
    freed_after = None
    started = time.monotonic()
    while time.monotonic() - started < 8:
        try:
            async with kv.lock("resident:o_late", timeout=10, wait=0.2):
                freed_after = time.monotonic() - started
                break
        except (LockTimeout, StoreUnavailable):
            await asyncio.sleep(0.1)
    assert freed_after is not None and freed_after < 3


async def test_after_a_redis_failure_a_message_is_claimed_alone_before_its_lock_is_taken(rig):
    # Claim and lock go in one script only while Redis answers: once it has failed, until it answers again, the
    # claim goes alone first (sent into a frozen Redis, a claim-and-take would later take the resident's lock
    # and flow state for a message already answered "busy").
    kv, calls = rig.kv, []
    real = kv._call

    async def counted(make):
        calls.append("call")
        return await real(make)

    kv._call = counted
    claim = Claim("seen:alone-1", "pending", 60)
    async with kv.lock("resident:o_alone", timeout=5, wait=1, claim=claim) as held:
        assert held == {} and claim.made
    assert len(calls) == 2  # claim-and-take, release
    rig.redis.freeze()
    with pytest.raises(StoreUnavailable):
        await kv.get("anything")  # Redis fails
    rig.redis.restore()
    calls.clear()
    claim = Claim("seen:alone-2", "pending", 60)
    async with kv.lock("resident:o_alone", timeout=5, wait=1, claim=claim) as held:
        assert held == {} and claim.made
    assert len(calls) == 3  # the claim alone (it finds Redis back), the take, the release
    calls.clear()
    claim = Claim("seen:alone-3", "pending", 60)
    async with kv.lock("resident:o_alone", timeout=5, wait=1, claim=claim) as held:
        assert held == {} and claim.made
    assert len(calls) == 2  # answered since: together again


async def test_two_workers_never_run_one_residents_steps_at_once_even_past_the_lock_life(rig, monkeypatch):
    monkeypatch.setattr(gateway_module, "LOCK_TTL", 0.6)  # a step (a hung query) outlives the lock's life
    gate, log, started = asyncio.Event(), [], asyncio.Event()
    _a, url_a = await rig.bot(routers=[_probe_router(gate, log, started)], own_store=True)
    _b, url_b = await rig.bot(routers=[_probe_router(gate, log, started)], own_store=True)
    phone_a, phone_b = Phone(url_a, rig.settings), Phone(url_b, rig.settings)
    try:
        first = asyncio.create_task(phone_a.text("o_two", "长步骤"))
        await asyncio.wait_for(started.wait(), 5)
        second = asyncio.create_task(phone_b.text("o_two", "短步骤"))
        await asyncio.sleep(2.0)  # three lock lives
        assert log == ["start"]  # worker B waits: the lock is renewed while A's step runs
        gate.set()
        await first
        await second
        assert log == ["start", "end", "short"]
    finally:
        await phone_a.close()
        await phone_b.close()


# -- plain-mode replay -----------------------------------------------------------------------------------------


async def test_a_signed_query_string_carries_one_body_only(rig):
    _bot, url = await rig.bot()
    await _reporter(rig)
    phone = Phone(url, rig.settings)
    try:
        query = phone.signed_query()
        sent = message_xml("o_li", "text", {"Content": "菜单", "MsgId": 42})  # its CreateTime too: a retry is the
        first = await phone.post_xml(sent, query)  # same bytes (built twice, a second could pass between them)
        assert first.status == 200 and "回复" in first.text
        retry = await phone.post_xml(sent, query)
        assert (retry.status, retry.text) == (200, first.text)  # WeChat's retry: the stored reply
        forged = await phone.post_xml(message_xml("o_admin", "text", {"Content": "待分流", "MsgId": 43}), query)
        assert forged.status == 403
    finally:
        await phone.close()


# -- pushes while Redis is away --------------------------------------------------------------------------------


async def test_pushes_drained_while_redis_is_away_wait_and_go_out_once_when_it_returns(rig, fake_wechat, clock):
    from storage.outbox import NoticeKind, OutboxMessage, OutboxStatus, enqueue

    bot, _url = await rig.bot()
    resident = await _reporter(rig)
    for n in range(3):
        async with rig.truth.write() as s:
            await enqueue(s, NoticeKind.REPLY, f"第{n + 1}条通知", [(resident.id, f"fault-push:{n}")], clock.now())
    fake_wechat.sent.clear()
    rig.redis.cut()  # the rate limit and the access token live in Redis: nothing can be sent
    await bot.services["sender"].drain()

    async def statuses() -> list[str]:
        async with rig.truth.read() as s:
            return list((await s.exec(select(OutboxMessage.status).order_by(OutboxMessage.id))).all())

    assert await statuses() == [OutboxStatus.PENDING] * 3  # not `sending`, never `unknown`: nothing went out
    assert fake_wechat.texts_to("o_li") == []
    rig.redis.restore()
    clock.advance(seconds=10)  # past the short retry
    await asyncio.sleep(0.4)
    await bot.services["sender"].drain()
    assert await statuses() == [OutboxStatus.SENT] * 3
    assert sorted(fake_wechat.texts_to("o_li")) == ["第1条通知", "第2条通知", "第3条通知"]
