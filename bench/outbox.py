"""Outbox benchmark: drain N queued notifications against the fake WeChat API (a separate process) under a
send-rate limit, and time a due-scan over M needs.

    python bench/outbox.py                      # 100,000 notifications at 2,000/s, 1,000,000 needs, SQLite
    python bench/outbox.py --rows 10000 --needs 100000
    python bench/outbox.py --rows 5000 --needs 10000 --latency 0.05 --rate 200   # WeChat-like round trips
    STEWARD_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench python bench/outbox.py

Prints: the baseline (the fake API's raw throughput with a bare aiohttp client, no outbox), time to drain,
peak memory (max RSS), duplicates (from /_fake/sent), and the due-scan in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
from sqlalchemy import insert, text
from sqlmodel import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.push import PushPolicy, Sender
from bot.wechat_api import WeChatClient
from storage import migrate
from storage.clock import Clock
from storage.db import Database
from storage.kv import MemoryStore
from storage.needs import Need
from storage.org import Community, Street
from storage.outbox import OutboxMessage, OutboxStatus
from storage.residents import Resident

CHUNK = 10_000
REPO = Path(__file__).resolve().parent.parent


async def start_fake(latency: float = 0.0) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot.fake_wechat", "--port", "0",
                                                "--latency", str(latency), stdout=subprocess.PIPE, cwd=REPO)
    return proc, (await proc.stdout.readline()).decode().strip()


async def fake_stats(base: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(base + "/_fake/sent", params={"kind": "text"}) as r:
        return await r.json()


async def baseline(base: str, n: int, concurrency: int = 32) -> float:
    """Raw fake-API throughput: get a token, then n custom sends with a bare aiohttp client."""
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/cgi-bin/token", params={"grant_type": "client_credential",
                            "appid": "wx0000000000000000", "secret": "steward-dev-secret"}) as r:
            token = (await r.json())["access_token"]
        queue = iter(range(n))
        started = time.perf_counter()

        async def worker() -> None:
            for i in queue:
                body = {"touser": f"o_base_{i}", "msgtype": "text", "text": {"content": f"基线{i}"}}
                async with http.post(base + "/cgi-bin/message/custom/send", params={"access_token": token},
                                     json=body) as r:
                    await r.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


async def fill_outbox(db: Database, rows: int, now: dt.datetime) -> None:
    for start in range(0, rows, CHUNK):
        end = min(rows, start + CHUNK)
        async with db.write() as s:
            await s.exec(insert(Resident), params=[
                {"openid": f"o_bench_{i}", "created_at": now, "last_contact_at": now, "subscribed": True}
                for i in range(start, end)])
    async with db.read() as s:
        first = (await s.exec(select(func.min(Resident.id)).where(Resident.openid.like("o_bench_%")))).one()
    for start in range(0, rows, CHUNK):
        end = min(rows, start + CHUNK)
        async with db.write() as s:
            await s.exec(insert(OutboxMessage), params=[
                {"idempotency_key": f"bench:{i}", "resident_id": first + i, "kind": "need_update",
                 "text": f"您的诉求有新进展（第{i}号）", "payload": "{}", "status": "pending", "attempts": 0,
                 "next_attempt_at": now, "created_at": now} for i in range(start, end)])


async def fill_needs(db: Database, count: int, now: dt.datetime) -> None:
    async with db.write() as s:
        street = Street(code="BS", name="基准街道")
        s.add(street)
        await s.flush()
        community = Community(code="BC", name="基准社区", street_id=street.id)
        s.add(community)
        await s.flush()
        cid = community.id
    statuses = ["reported", "assigned", "in_progress", "resolved", "rated", "closed"]
    for start in range(0, count, CHUNK * 5):
        end = min(count, start + CHUNK * 5)
        rows = []
        for i in range(start, end):
            due = now + dt.timedelta(minutes=(i * 37) % (60 * 24 * 30) - 60 * 24 * 10)
            rows.append({"ticket": f"B{i:09d}", "status": statuses[i % 6], "text": "基准诉求", "item_code": "JZ-01",
                         "category": "居住环境", "tier": "B", "community_id": cid, "supporters": 1, "ratings_given": 0,
                         "rework_count": 0, "created_at": now, "updated_at": now, "resolve_by": due,
                         "feedback_due_at": due, "respond_by": due})
        async with db.write() as s:
            await s.exec(insert(Need), params=rows)


async def due_scan(db: Database, now: dt.datetime) -> tuple[float, int]:
    """What the chase job asks: open needs past their deadline and not chased yet, the oldest 200."""
    query = (select(Need.id).where(Need.status.in_(["reported", "assigned", "in_progress"]), Need.resolve_by < now,
                                   Need.chased_at.is_(None)).order_by(Need.resolve_by).limit(200))
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        async with db.read() as s:
            found = len((await s.exec(query)).all())
        best = min(best, time.perf_counter() - started)
    return best * 1000, found


async def main(args: argparse.Namespace) -> None:
    url = os.environ.get("STEWARD_BENCH_DATABASE_URL")
    tmp = tempfile.mkdtemp(prefix="steward-bench-")
    db_url = ("postgresql+asyncpg://" + url.split("://", 1)[1]) if url else f"sqlite+aiosqlite:///{tmp}/bench.db"
    db = Database(db_url)
    await migrate.upgrade(db)
    now = dt.datetime.now(dt.UTC)
    fake, base = await start_fake(args.latency)
    try:
        base_rate = await baseline(base, min(args.rows, 20_000))
        print(f"baseline: fake WeChat API, bare aiohttp, {min(args.rows, 20_000)} sends: {base_rate:,.0f}/s")
        async with aiohttp.ClientSession() as http:
            await http.post(base + "/_fake/clear")

        t = time.perf_counter()
        await fill_outbox(db, args.rows, now)
        print(f"queued {args.rows:,} notifications in {time.perf_counter() - t:.1f} s")

        # Peak memory from the resident set size: tracemalloc would slow the drain it measures several-fold.
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kv = MemoryStore()
        started = time.perf_counter()
        async with WeChatClient("wx0000000000000000", "steward-dev-secret", base, kv) as wechat:
            sender = Sender(db, kv, wechat, Clock(), send_rate=args.rate,
                            policy=PushPolicy(batch=args.batch, concurrency=args.concurrency))
            total = 0
            while done := await sender.drain(max_batches=50):
                total += done
        elapsed = time.perf_counter() - started
        stats = await fake_stats(base)
        pairs = Counter((e["openid"], e["text"]) for e in stats["sent"])
        async with db.read() as s:
            sent = (await s.exec(select(func.count()).where(OutboxMessage.status == OutboxStatus.SENT))).one()
        per_second = Counter(int(e["timestamp"]) for e in stats["sent"])
        print(f"drained {total:,} rows in {elapsed:.1f} s = {total / elapsed:,.0f}/s (limit {args.rate:,}/s); "
              f"busiest second {max(per_second.values()):,} sends; claims of {args.batch} rows")
        print(f"fake API received {stats['counts'].get('text', 0):,} texts, {len(pairs):,} distinct, "
              f"duplicates {sum(c - 1 for c in pairs.values())}; rows marked sent {sent:,}")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak memory: max RSS {rss:.0f} MB ({rss - rss_before:+.0f} MB during the drain)")
    finally:
        fake.terminate()
        await fake.wait()

    t = time.perf_counter()
    await fill_needs(db, args.needs, now)
    print(f"inserted {args.needs:,} needs in {time.perf_counter() - t:.1f} s")
    if db.is_sqlite:
        async with db.engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
    ms, found = await due_scan(db, now)
    print(f"due-scan (open, past resolve_by, not chased; oldest 200) over {args.needs:,} needs: {ms:.1f} ms "
          f"({found} found)")
    await db.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=2_000)
    parser.add_argument("--needs", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=PushPolicy.batch, help="rows per claim (the sender's default)")
    parser.add_argument("--concurrency", type=int, default=PushPolicy.concurrency)
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds the fake API takes per message (the real API's round trip is tens of ms)")
    asyncio.run(main(parser.parse_args()))
