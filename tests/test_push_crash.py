"""kill -9 a sender in the middle of a drain, start another: nothing is received twice, nothing is lost
silently (every row is sent, or flagged `unknown` for staff when the killed sender had it in flight)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import insert
from sqlmodel import func, select

from bot.push import PushPolicy, Sender
from bot.wechat_api import WeChatClient
from storage.clock import FrozenClock
from storage.outbox import OutboxMessage, OutboxStatus
from storage.residents import Resident
from tests.conftest import PG_URL, _pg_async_url

REPO = Path(__file__).resolve().parent.parent
RESIDENTS, PER_RESIDENT, BATCH = 200, 5, 50


@pytest.fixture
async def fake_process():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.fake_wechat", "--port", "0", cwd=REPO, stdout=subprocess.PIPE
    )
    base_url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
    yield base_url
    proc.terminate()
    await proc.wait()


async def received(base_url: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(base_url + "/_fake/sent", params={"kind": "text"}) as r:
        return await r.json()


async def test_a_sender_killed_mid_drain_never_delivers_a_row_twice(db, kv, backend, pg_schema, fake_process):
    now = dt.datetime.now(dt.UTC)  # the subprocess uses the real clock
    async with db.write() as s:
        await s.exec(insert(Resident), params=[
            {"openid": f"o_crash_{i:04d}", "created_at": now, "last_contact_at": now, "subscribed": True}
            for i in range(RESIDENTS)
        ])
    async with db.read() as s:
        ids = list((await s.exec(select(Resident.id).order_by(Resident.id))).all())
    async with db.write() as s:
        await s.exec(insert(OutboxMessage), params=[
            {"idempotency_key": f"crash:{rid}:{n}", "resident_id": rid, "kind": "progress", "text": f"进展{rid}-{n}",
             "payload": "{}", "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
            for n in range(PER_RESIDENT) for rid in ids
        ])
    total = RESIDENTS * PER_RESIDENT

    url, schema = (_pg_async_url(PG_URL), pg_schema) if backend == "services" and PG_URL else (db.url, None)
    cmd = [sys.executable, "-m", "bot.push", "--database-url", url, "--api-base", fake_process,
           "--rate", "1500", "--batch", str(BATCH)] + (["--schema", schema] if schema else [])
    sender_proc = await asyncio.create_subprocess_exec(*cmd, cwd=REPO, stdout=subprocess.DEVNULL)
    try:
        for _ in range(1000):
            if (await received(fake_process))["total"] >= total // 4:
                break
            await asyncio.sleep(0.01)
    finally:
        os.kill(sender_proc.pid, signal.SIGKILL)
        await sender_proc.wait()
    before_restart = (await received(fake_process))["total"]
    assert 0 < before_restart < total, "the kill must land mid-drain"

    # A new sender starts after the dead one's lease has run out.
    later = FrozenClock(dt.datetime.now(dt.UTC) + PushPolicy.lease + dt.timedelta(minutes=1))
    async with WeChatClient("wx0000000000000000", "steward-dev-secret", fake_process, kv) as wechat:
        sender = Sender(db, kv, wechat, later, send_rate=5000, policy=PushPolicy(batch=200))
        while await sender.drain():
            pass

    got = await received(fake_process)
    pairs = Counter((e["openid"], e["text"]) for e in got["sent"])
    assert got["counts"]["text"] == len(got["sent"]) == len(pairs), "a message reached WeChat twice"
    async with db.read() as s:
        status, text = OutboxMessage.status, OutboxMessage.text
        by_status = dict((await s.exec(select(status, func.count()).group_by(status))).all())
        unknown = list((await s.exec(select(text).where(status == OutboxStatus.UNKNOWN))).all())
        sent = set((await s.exec(select(text).where(status == OutboxStatus.SENT))).all())
    assert set(by_status) <= {OutboxStatus.SENT, OutboxStatus.UNKNOWN}
    assert by_status.get(OutboxStatus.SENT, 0) + len(unknown) == total
    assert len(unknown) <= BATCH  # at most the batch the killed sender had in flight
    texts_received = {text for _openid, text in pairs}
    assert sent <= texts_received  # every row marked sent really arrived ...
    assert texts_received <= sent | set(unknown)  # ... and whatever arrived is a sent or a flagged row
