"""Console ledger benchmark: the 台账 pages and its XLSX export over HTTP (the console's own handlers, templates and
storage calls, on loopback), for community staff whose community has 100,000 needs and for the district (an
admin: 1,000,000 needs), each beside a bare query of the same rows. The needs are bulk-inserted by bench/stats.py.

  first     /ledger                              first page, newest first (target < 150 ms)
  filtered  /ledger?status=open&item=JZ-01&...   a filtered page (target < 150 ms)
  page 500  /ledger?after=<cursor>               the 500th page by keyset (its cursor is the 499th page's last row)
  export    /ledger.xlsx, /ledger.csv             EXPORT rows (default 10,000; target < 5 s), streamed: read from the
                                                 database in batches of LEDGER_EXPORT_BATCH, so memory is bounded;
                                                 each is run a second time under tracemalloc for its peak

    python bench/console.py                        # 1,000,000 needs in 10 communities (100,000 each), SQLite
    python bench/console.py --needs 200000 --communities 2
    python bench/console.py --reuse FILE           # time the SQLite file an earlier run filled (it prints it)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
import openpyxl
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.config import Settings
from bot.console import pages
from bot.console.common import ACTOR_KEY, DEPS_KEY, SESSION_KEY, USER_KEY, ConsoleDeps
from storage import migrate
from storage.actor import Actor
from storage.clock import FrozenClock
from storage.console_auth import ConsoleSession
from storage.db import Database
from storage.kv import MemoryStore
from storage.needs import OPEN_STATUSES, Need, queries
from storage.org import Community
from storage.roles import ROLE_SCOPE, Role, RoleGrant

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_stats", ROOT / "bench" / "stats.py")
bench_stats = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_stats)

PAGE = queries.LEDGER_PAGE
FILTER = {"status": "open", "item": "JZ-01", "sort": "new"}  # every bench need is JZ-01: the status does the work


def staff_of(community_id: int) -> Actor:
    grant = RoleGrant(id=1, resident_id=1, role=Role.COMMUNITY_STAFF.value, scope_type=ROLE_SCOPE[Role.COMMUNITY_STAFF],
                      scope_id=community_id, granted_by="bench", granted_at=bench_stats.NOW)
    return Actor.resident(1, (grant,))


def console(db: Database, who: Actor) -> web.Application:
    """The console's page routes with the sign-in gate replaced by a fixed person (the gate costs one KV read and
    one grants read per request, timed by the console tests, not here)."""

    @web.middleware
    async def signed_in(request: web.Request, handler):
        request[ACTOR_KEY] = who
        request[SESSION_KEY] = ConsoleSession(sid="bench", resident_id=1, csrf="bench",
                                              started_at=bench_stats.NOW.isoformat())
        request[USER_KEY] = "基准"
        return await handler(request)

    app = web.Application(middlewares=[signed_in])
    app[DEPS_KEY] = ConsoleDeps(settings=Settings(), db=db, kv=MemoryStore(), clock=FrozenClock(bench_stats.NOW),
                                media=None)  # type: ignore[arg-type]  # no page here shows media
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(ROOT / "bot" / "console" / "templates"), autoescape=True)
    app.add_routes(pages.routes)
    return app


async def best_of(runs: int, make):
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = await make()
        best = min(best, time.perf_counter() - started)
    return best, result


def scope(who: Actor) -> list:
    return queries.seen_by(who)


async def bare_page(db: Database, where: list, offset: int = 0, size: int = PAGE) -> list[Need]:
    """The same rows the page shows, asked directly (no count, no names, no template, no HTTP)."""
    async with db.read() as s:
        query = select(Need).where(*where).order_by(col(Need.created_at).desc(), col(Need.id).desc())
        return list((await s.exec(query.offset(offset).limit(size))).all())


async def get(client: TestClient, path: str) -> bytes:
    async with client.get(path) as r:
        assert r.status == 200, (path, r.status)
        return await r.read()


async def drain(client: TestClient, path: str) -> int:
    """Download `path` keeping none of it (the client's copy would count in the traced peak): its size."""
    size = 0
    async with client.get(path) as r:
        assert r.status == 200, (path, r.status)
        async for chunk in r.content.iter_chunked(64 * 1024):
            size += len(chunk)
    return size


async def traced_peak(make) -> int:
    """Run `make()` under tracemalloc: the Python heap's peak above where it started, every thread counted (the
    sheet is written in one)."""
    tracemalloc.start()
    try:
        await make()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def bench_one(db: Database, label: str, who: Actor, export: int) -> None:
    where = scope(who)
    client = TestClient(TestServer(console(db, who)))
    await client.start_server()
    try:
        async with db.read() as s:
            total = (await s.exec(select(func.count()).select_from(Need).where(*where))).one()
        print(f"[{label}] {total:,} needs visible")

        base, _ = await best_of(5, lambda: bare_page(db, where))
        took, body = await best_of(5, lambda: get(client, "/ledger"))
        assert body.count(b'<td class="nowrap"><a href=') == PAGE
        print(f"[{label}]   first page ({PAGE} rows): {took * 1000:,.1f} ms (target < 150 ms; "
              f"bare query {base * 1000:,.1f} ms)")

        open_ = col(Need.status).in_([s.value for s in OPEN_STATUSES])
        base, _ = await best_of(5, lambda: bare_page(db, [*where, open_, Need.item_code == "JZ-01"]))
        query = "&".join(f"{k}={v}" for k, v in FILTER.items())
        took, _body = await best_of(5, lambda: get(client, f"/ledger?{query}"))
        print(f"[{label}]   filtered page (status=open, item): {took * 1000:,.1f} ms (bare query "
              f"{base * 1000:,.1f} ms)")

        # Page 500 by keyset: the cursor is what page 499's 下一页 link carries.
        before = (await bare_page(db, where, offset=499 * PAGE - 1, size=1))[0]
        cursor = f"{before.created_at.isoformat()}|{before.id}"
        base, rows = await best_of(5, lambda: bare_page(db, where, offset=499 * PAGE))
        took, body = await best_of(5, lambda: get(client, "/ledger?" + urlencode({"after": cursor})))
        first_ticket = rows[0].ticket.encode()
        assert first_ticket in body, "page 500 does not start where OFFSET says"
        print(f"[{label}]   page 500 (keyset): {took * 1000:,.1f} ms (bare OFFSET {499 * PAGE:,} query "
              f"{base * 1000:,.1f} ms)")

        base, _ = await best_of(3, lambda: bare_page(db, where, size=export))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        took, body = await best_of(1, lambda: get(client, "/ledger.xlsx"))
        grown_untraced = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss
        # A second run, traced (tracemalloc slows it down: not timed), the download drained as it comes.
        peak = await traced_peak(lambda: drain(client, "/ledger.xlsx"))
        grown = max(grown_untraced, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss)
        sheet = openpyxl.load_workbook(io.BytesIO(body), read_only=True).active
        count = sum(1 for r in sheet.iter_rows(values_only=True) if not str(r[0]).startswith("已截断")) - 1
        print(f"[{label}]   XLSX export of {count:,} rows: {took * 1000:,.0f} ms (target < 5,000 ms; bare query "
              f"of the rows {base * 1000:,.0f} ms) — {len(body) / 1e6:.1f} MB file, Python peak "
              f"{peak / 1e6:.1f} MB (streamed), max RSS grew {grown / 1024:.0f} MB")

        took, size = await best_of(1, lambda: drain(client, "/ledger.csv"))
        peak = await traced_peak(lambda: drain(client, "/ledger.csv"))
        print(f"[{label}]   CSV export of the same rows: {took * 1000:,.0f} ms — {size / 1e6:.1f} MB file, "
              f"Python peak {peak / 1e6:.1f} MB (streamed)")
    finally:
        await client.close()


async def main(args: argparse.Namespace) -> None:
    # LEDGER_EXPORT_LIMIT caps one export (the console reads it from pages); --export times what a larger cap
    # would cost.
    pages.LEDGER_EXPORT_LIMIT = max(pages.LEDGER_EXPORT_LIMIT, args.export)
    bench_stats.COMMUNITIES = args.communities
    path = args.reuse or tempfile.mkdtemp(prefix="steward-bench-console-") + "/bench.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await migrate.upgrade(db)
        if not args.reuse:
            started = time.perf_counter()
            await bench_stats.fill(db, args.needs)
            print(f"inserted {args.needs:,} needs in {args.communities} communities in "
                  f"{time.perf_counter() - started:.1f} s into {path}")
        async with db.read() as s:
            first = (await s.exec(select(Community.id).order_by(Community.id))).first()
        await bench_one(db, "community staff", staff_of(first), args.export)
        await bench_one(db, "district admin", Actor.operator("bench"), args.export)
    finally:
        await db.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--needs", type=int, default=1_000_000)
    parser.add_argument("--communities", type=int, default=10, help="the needs are spread evenly over them")
    parser.add_argument("--export", type=int, default=10_000, help="rows in the timed XLSX export")
    parser.add_argument("--reuse", metavar="FILE", help="time the SQLite file an earlier run filled")
    asyncio.run(main(parser.parse_args()))
