"""The write path under load: ticket numbers taken at the end of a report stay unique and gap-free, and on
SQLite this process's writers queue in order, with a bounded wait, instead of sleeping in SQLite's busy handler."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
from sqlmodel import select

from bot.config import Settings
from bot.simulator import Phone
from storage.actor import actor_for
from storage.db import Database, DatabaseLimits, DatabaseUnavailable
from storage.needs import Need, NeedError, file_on_behalf, report_need
from storage.outbox import OutboxMessage
from storage.roles import Role
from tests.conftest import REDIS_URL
from tests.factories import grant, make_district, make_resident

REPO = Path(__file__).resolve().parent.parent


async def test_reports_and_filings_at_once_get_consecutive_tickets_and_no_placeholder_survives(db, clock):
    d = await make_district(db)
    residents = [await make_resident(db, f"o_r{i}", d.buildings["B1"], room=str(100 + i)) for i in range(20)]
    leader = await make_resident(db, "o_leader", d.buildings["B1"], name="楼长老李")
    await grant(db, leader, Role.BUILDING_LEADER, d.buildings["B1"].id)
    actor = await actor_for(db, leader.id)
    unbound = await make_resident(db, "o_unbound")
    # Reports (numbered last) and filings on behalf (numbered first) race for the same day's counter, and a
    # refused report in the middle gives no number away.
    needs = await asyncio.gather(
        *(report_need(db, r.id, f"楼道灯坏了 {i}", "JZ-05", clock.now()) for i, r in enumerate(residents)),
        *(file_on_behalf(db, actor, f"垃圾桶满了 {i}", "JZ-02", clock.now(), subject_id=residents[i].id)
          for i in range(5)),
        report_need(db, unbound.id, "路灯不亮了", "JZ-05", clock.now()),
        return_exceptions=True,
    )
    refused = [n for n in needs if isinstance(n, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], NeedError) and "绑定" in refused[0].reason
    tickets = sorted(n.ticket for n in needs if isinstance(n, Need))
    assert tickets == [f"20261127-{i:04d}" for i in range(1, 26)]
    async with db.read() as s:
        stored = sorted((await s.exec(select(Need.ticket))).all())
        queued = (await s.exec(select(OutboxMessage.text))).all()
    assert stored == tickets  # what each caller was told is what the database holds
    assert not any("~" in text for text in queued)  # the placeholder never reached a notice


async def test_a_refused_report_takes_no_number(db, clock):
    d = await make_district(db)
    resident = await make_resident(db, "o_a", d.buildings["B1"])
    first = await report_need(db, resident.id, "楼道灯坏了", "JZ-05", clock.now())
    with pytest.raises(NeedError):
        await report_need(db, resident.id, "楼道灯坏了", "NO-SUCH-CODE", clock.now())
    second = await report_need(db, resident.id, "电梯停了", "JZ-05", clock.now())
    assert (first.ticket, second.ticket) == ("20261127-0001", "20261127-0002")


async def test_sqlite_writers_take_turns_in_the_order_they_came(sqlite_db):  # PostgreSQL locks rows instead
    db = sqlite_db
    order: list[int] = []
    gate = asyncio.Event()

    async def writer(i: int) -> None:
        async with db.write() as s:
            if i == 0:
                await gate.wait()  # the first holds the turn until every other has queued
            await s.exec(select(1))
            order.append(i)

    tasks = [asyncio.create_task(writer(0))]
    await asyncio.sleep(0.05)
    for i in range(1, 8):
        tasks.append(asyncio.create_task(writer(i)))
        await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(*tasks)
    assert order == list(range(8))


async def test_a_sqlite_writer_waits_a_bounded_time_then_reports_the_database_busy(sqlite_db):
    db = sqlite_db
    impatient = Database(db.url, limits=DatabaseLimits(pool_wait=0.2))
    async with _turn_held(impatient):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(DatabaseUnavailable):
            async with impatient.write():
                raise AssertionError("given the write turn while another writer held it")
        assert 0.15 < loop.time() - started < 2
    async with impatient.write() as s:  # the turn was given back: the next writer goes at once
        await s.exec(select(1))
    await impatient.dispose()


def _add_resident(openid: str, order: list[str] | None = None, fail: bool = False):
    from sqlalchemy import insert

    from storage.residents import Resident

    def work(connection):
        connection.execute(insert(Resident.__table__).values(
            openid=openid, created_at=dt.datetime(2026, 11, 27, 9, 30, tzinfo=dt.UTC), subscribed=True,
            notify_consultation=True))
        if order is not None:
            order.append(openid)
        if fail:
            raise ValueError(f"{openid} refused after its insert")
        return openid
    return work


async def _openids(db: Database) -> set[str]:
    from storage.residents import Resident

    async with db.read() as s:
        return set((await s.exec(select(Resident.openid))).all())


@contextlib.asynccontextmanager
async def _turn_held(db: Database):
    """An ordinary writer holds SQLite's one write turn until the block ends."""
    gate, held = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with db.write() as s:
            await s.exec(select(1))
            held.set()
            await gate.wait()

    task = asyncio.create_task(holder())
    await held.wait()
    try:
        yield
    finally:
        gate.set()
        await task


async def test_sqlite_writes_queued_together_go_in_order_and_one_that_fails_undoes_only_itself(sqlite_db):
    db = sqlite_db
    order: list[str] = []
    # While an ordinary writer holds the turn, twelve writes queue: they then go as one batch.
    async with _turn_held(db):
        writes = [asyncio.create_task(db.write_at_once(_add_resident(f"o_q{i}", order, fail=i == 5)))
                  for i in range(12)]
        await asyncio.sleep(0.05)
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert order == [f"o_q{i}" for i in range(12)]  # in the order they came
    assert isinstance(outcomes[5], ValueError)
    assert [o for i, o in enumerate(outcomes) if i != 5] == [f"o_q{i}" for i in range(12) if i != 5]
    assert await _openids(db) == {f"o_q{i}" for i in range(12) if i != 5}


async def test_a_queued_sqlite_write_that_waited_past_the_bound_is_refused_and_never_runs(sqlite_db):
    impatient = Database(sqlite_db.url, limits=DatabaseLimits(pool_wait=0.2))
    async with _turn_held(impatient):
        with pytest.raises(DatabaseUnavailable):
            await impatient.write_at_once(_add_resident("o_late"))
    assert await impatient.write_at_once(_add_resident("o_next")) == "o_next"  # the queue goes on
    assert await _openids(impatient) == {"o_next"}
    await impatient.dispose()


async def test_a_one_statement_write_is_refused_a_second_statement_where_each_statement_commits_alone(db):
    # On PostgreSQL `one_statement` runs without a transaction: a second statement would not be undone with the
    # first, so it is refused. On SQLite the work is one transaction whatever it runs, and both go through.
    from sqlalchemy import text

    def two(connection):
        connection.execute(text("SELECT 1"))
        return connection.execute(text("SELECT 2")).scalar_one()

    if db.is_sqlite:
        assert await db.write_at_once(two, one_statement=True) == 2
    else:
        with pytest.raises(RuntimeError, match="second statement"):
            await db.write_at_once(two, one_statement=True)
    assert await db.write_at_once(lambda c: c.execute(text("SELECT 3")).scalar_one(), one_statement=True) == 3


# -- several workers on one port ------------------------------------------------------------------------------


def _env(**steward: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["STEWARD_ENV_FILE"] = "/nonexistent"
    env.update({f"STEWARD_{k}": v for k, v in steward.items()})
    return env


async def test_several_workers_without_redis_are_refused_in_one_sentence(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "serve", "--workers", "2", "--port", str(_free_port()), cwd=tmp_path,
        env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = [line for line in err.decode().splitlines() if line.strip() and "INFO" not in line]
    assert proc.returncode == 2
    assert lines == ["配置错误：--workers 需要 Redis（STEWARD_REDIS_URL）：多个进程要共享会话状态、锁和去重记录。"]
    assert not (tmp_path / "steward.db").exists()  # refused before anything was opened


@pytest.mark.slow
async def test_two_workers_share_one_port_and_stop_together(tmp_path):
    if not REDIS_URL:
        pytest.skip("several workers need Redis (STEWARD_TEST_REDIS_URL)")
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "serve", "--workers", "2", "--no-scheduler", "--port", str(port),
        cwd=tmp_path, env=_env(REDIS_URL=REDIS_URL, REDIS_PREFIX=f"steward-test-workers:{uuid.uuid4().hex[:6]}:"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline:
            assert proc.returncode is None, (await proc.stderr.read()).decode()
            workers = _children(proc.pid)
            await asyncio.sleep(0.2)
        assert len(workers) == 2
        # Both listen: the kernel gives new connections to each (the second starts once the first listens).
        answered: set[int] = set()
        while answered != set(workers) and time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as r:
                    answered.add((await r.json())["worker"])
            await asyncio.sleep(0.05)
        assert answered == set(workers)
        # Each conversation on its own connection: the kernel spreads them over the workers, and a flow's
        # state (in Redis) follows the resident from one worker to the other.
        answers = []
        for i in range(12):
            async with aiohttp.ClientSession() as http:
                phone = Phone(f"http://127.0.0.1:{port}", Settings(), http)
                answers.append([(await phone.text(f"o_w{i}", text)).text for text in ("菜单", "取消")])
        assert all("请回复数字" in menu and "已退出" in left for menu, left in answers)
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
    assert not any(_running(pid) for pid in workers)
    assert "Traceback" not in (await proc.stderr.read()).decode()


def _children(pid: int) -> list[int]:
    with contextlib.suppress(FileNotFoundError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_sqlite_write_whose_writer_stops_mid_write_is_reported_unknown_never_lost(sqlite_db):
    import threading

    from storage.db import CommitUnknown

    db = sqlite_db
    running, go_on = asyncio.Event(), threading.Event()
    loop = asyncio.get_running_loop()
    add = _add_resident("o_mid_write")

    def slow(connection):
        loop.call_soon_threadsafe(running.set)
        go_on.wait(5)
        return add(connection)

    write = asyncio.create_task(db.write_at_once(slow))
    await running.wait()
    db._sqlite_writer.drainer.cancel()  # shutdown while the thread holds the batch
    await asyncio.sleep(0.05)
    go_on.set()
    with pytest.raises(CommitUnknown):
        await write
    await asyncio.sleep(0.2)  # the thread finishes its transaction
    assert await _openids(db) == {"o_mid_write"}  # it did commit: "unknown" was the honest answer
