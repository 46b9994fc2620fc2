"""kill -9 a sender in the middle of a drain, start another: nothing is received twice, nothing is lost
silently (every row is sent, or flagged `unknown` for staff when the killed sender had it in flight), and what is
flagged is at most one small batch: a sender holds one claim at a time, however many callers drain it at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlmodel import func, select

from bot.config import ConfigError, Settings, load_settings
from bot.push import PushPolicy, Sender, claim_size
from bot.wechat_api import WeChatClient
from storage.clock import FrozenClock
from storage.outbox import OutboxMessage, OutboxStatus
from storage.residents import Resident
from tests.conftest import PG_URL, _pg_async_url

REPO = Path(__file__).resolve().parent.parent
RESIDENTS, PER_RESIDENT = 200, 5
BATCH = PushPolicy.batch  # the default claim: the most a killed sender may leave `unknown`
HOLD = 1.5  # seconds WeChat holds each call once slowed down, so the kill lands with a batch in flight


async def queue_rows(db, residents: int, per_resident: int, now: dt.datetime) -> int:
    async with db.write() as s:
        await s.exec(insert(Resident), params=[
            {"openid": f"o_crash_{i:04d}", "created_at": now, "last_contact_at": now, "subscribed": True}
            for i in range(residents)
        ])
    async with db.read() as s:
        ids = list((await s.exec(select(Resident.id).order_by(Resident.id))).all())
    async with db.write() as s:
        await s.exec(insert(OutboxMessage), params=[
            {"idempotency_key": f"crash:{rid}:{n}", "resident_id": rid, "kind": "need_update", "text": f"进展{rid}-{n}",
             "payload": "{}", "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
            for n in range(per_resident) for rid in ids
        ])
    return residents * per_resident


async def count(db, status: str) -> int:
    async with db.read() as s:
        return (await s.exec(select(func.count()).where(OutboxMessage.status == status))).one()


async def test_a_sender_claims_a_small_batch_no_bigger_than_two_seconds_of_sends(db, kv, clock):
    assert BATCH == Settings().send_batch == 20
    assert Sender.from_settings(Settings(), db, kv, None, clock).policy.batch == 20
    slow = Sender.from_settings(Settings(send_rate=5, send_batch=50), db, kv, None, clock).policy
    assert (slow.batch, slow.concurrency) == (10, 10)
    assert claim_size(500, 200) == 400 and claim_size(1, 1) == 1
    with pytest.raises(ConfigError, match="STEWARD_SEND_BATCH"):
        load_settings({"STEWARD_SEND_BATCH": "0", "STEWARD_ENV_FILE": "/nonexistent/.env"})
    assert load_settings({"STEWARD_SEND_BATCH": "5", "STEWARD_ENV_FILE": "/nonexistent/.env"}).send_batch == 5


async def test_drains_called_at_once_in_one_process_hold_one_claim_at_a_time(db, kv, clock, fake_wechat, settings):
    """The server's prompt wake-up, its periodic tick and late replies all call drain on one sender."""
    total = await queue_rows(db, 60, 1, clock.now())
    fake_wechat.delay_next(0.05, times=10_000, kinds=("text",))  # each call 50 ms: batches would overlap if they could
    wechat = WeChatClient(settings.wechat_appid, settings.wechat_secret, settings.wechat_api_base, kv)
    sender = Sender.from_settings(settings, db, kv, wechat, clock)  # the default claim size
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, await count(db, OutboxStatus.SENDING))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        handled = await asyncio.gather(sender.drain(), sender.drain(), sender.drain())
    finally:
        watcher.cancel()
        await wechat.close()
    assert sum(handled) == total and fake_wechat.counts["text"] == total
    assert 0 < peak <= BATCH  # seen mid-send, and never two batches claimed at once
    assert await count(db, OutboxStatus.SENT) == total


@pytest.mark.slow
async def test_a_sender_killed_mid_drain_leaves_at_most_one_batch_unknown_and_never_delivers_twice(
    db, kv, backend, pg_schema, fake_wechat
):
    now = dt.datetime.now(dt.UTC)  # the subprocess uses the real clock
    total = await queue_rows(db, RESIDENTS, PER_RESIDENT, now)

    # A sender process with the default claim size, drained by three callers at once, as a server drains it.
    url, schema = (_pg_async_url(PG_URL), pg_schema) if backend == "services" and PG_URL else (db.url, None)
    cmd = [sys.executable, "-m", "bot.push", "--database-url", url, "--api-base", fake_wechat.base_url,
           "--rate", "500", "--drains", "3"] + (["--schema", schema] if schema else [])
    sender_proc = await asyncio.create_subprocess_exec(*cmd, cwd=REPO, stdout=subprocess.DEVNULL)
    try:
        for _ in range(3000):
            if fake_wechat.counts["text"] >= total // 4 or sender_proc.returncode is not None:
                break
            await asyncio.sleep(0.01)
        # WeChat slows down: every call from now on hangs a while, so the kill lands with claims in flight.
        fake_wechat.delay_next(HOLD, times=10 * total, kinds=("text",))
        await asyncio.sleep(0.4)
        in_flight = await count(db, OutboxStatus.SENDING)
    finally:
        os.kill(sender_proc.pid, signal.SIGKILL)
        await sender_proc.wait()
    fake_wechat.stop_failing()
    await asyncio.sleep(HOLD + 0.2)  # the held calls reach the resident; the dead sender never hears of it
    before_restart = fake_wechat.counts["text"]
    assert total // 4 <= before_restart < total, "the kill must land mid-drain"
    assert 0 < in_flight <= BATCH, f"{in_flight} rows were claimed at once (one claim of {BATCH} at most)"

    # A new sender starts after the dead one's lease has run out.
    later = FrozenClock(dt.datetime.now(dt.UTC) + PushPolicy.lease + dt.timedelta(minutes=1))
    async with WeChatClient("wx0000000000000000", "steward-dev-secret", fake_wechat.base_url, kv) as wechat:
        sender = Sender(db, kv, wechat, later, send_rate=5000, policy=PushPolicy(batch=200, concurrency=50))
        while await sender.drain():
            pass

    pairs = Counter((e["openid"], e["text"]) for e in fake_wechat.sent if e["kind"] == "text")
    assert fake_wechat.counts["text"] == sum(pairs.values()) == len(pairs), "a message reached WeChat twice"
    async with db.read() as s:
        status, text = OutboxMessage.status, OutboxMessage.text
        by_status = dict((await s.exec(select(status, func.count()).group_by(status))).all())
        unknown = list((await s.exec(select(text).where(status == OutboxStatus.UNKNOWN))).all())
        sent = set((await s.exec(select(text).where(status == OutboxStatus.SENT))).all())
    assert set(by_status) <= {OutboxStatus.SENT, OutboxStatus.UNKNOWN}
    assert by_status.get(OutboxStatus.SENT, 0) + len(unknown) == total
    assert len(unknown) == in_flight  # exactly the one batch the killed sender had in flight: staff review it
    texts_received = {text for _openid, text in pairs}
    assert sent <= texts_received  # every row marked sent really arrived ...
    assert texts_received <= sent | set(unknown)  # ... and whatever arrived is a sent or a flagged row
