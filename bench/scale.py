"""The scale targets of the write-path issue not measured elsewhere: a burst of first contacts, a broadcast to a
whole community, and the staff queues and due scans on a district of 1,000,000 needs. Each figure is printed
beside its target and a baseline measured in the same run.

    python bench/scale.py [--scenario burst|broadcast|queues|all] [--backend sqlite|pg|both]
                          [--burst 1000] [--audience 100000] [--needs 1000000]
                          [--database-url postgresql://postgres@127.0.0.1:5432/scale_bench]
                          [--redis-url redis://127.0.0.1:6379/5] [--profile DIR]

  burst      `--burst` residents the bot has never seen send 「菜单」 all at once to `steward serve` (one worker,
             pinned to core 1; the client on core 0). Target: every one answered (HTTP 200 with a real reply: not
             the busy/error texts, not an empty `success`), p99 < 1 s, measured from the moment all were sent.
             Baseline: the bare echo of bench/gateway.py under the same burst. Read back: one resident row each.
  broadcast  `--audience` bound residents (bulk-inserted) in one community; its staff member drafts and
             confirms a broadcast to the whole community (storage.broadcast, as chat and the console do), then
             the enqueue job's body runs until every outbox row is written. Target: < 10 s, memory bounded
             (tracemalloc peak of a second broadcast; RSS growth). Baseline: one bare bulk INSERT of as many rows.
  queues     bench/stats.py's bulk-inserted district (`--needs`, 30 communities): what community staff, the
             district admin and a grid worker with needs assigned to them are shown — chat's 待分流 and 片区诉求,
             the overdue (督办) list, the console's 今日 — and the scheduler's due scans (storage/need_clocks.py,
             close_unrated). Best of 5. Targets: queues < 50 ms, scans < 100 ms. Baseline: a bare COUNT(*).

PostgreSQL: the database named by --database-url is dropped and created afresh for each scenario (never give it
a database you keep); Redis keys under `steward-scale:` in --redis-url are deleted first.
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
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

THIS = Path(__file__).resolve()
REPO = THIS.parent.parent
sys.path.insert(0, str(REPO))

from bench.flow import async_url, bot, clear_redis, fresh_postgres, steward_env, summarise  # noqa: E402
from bench.gateway import TOKEN, _pct, free_port, pin, server, wait_healthy  # noqa: E402

PREFIX = "steward-scale:"
KEPT_DATABASES = {"test", "scale", "postgres", "template0", "template1"}
BURST_P99_MS = 1000.0
BROADCAST_SECONDS = 10.0
QUEUE_MS, SCAN_MS = 50.0, 100.0
PROGRESS_MS = 50.0  # a broadcast's progress: read every scheduler tick while it sends, like a staff queue


@dataclass
class Row:
    scenario: str
    what: str
    value: float  # the measured figure, in `unit`
    unit: str
    target: float | None  # None: shown, not judged
    baseline: str = ""
    ok: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.target is None and self.ok is None:
            return ""
        ok = self.ok if self.ok is not None else self.value < self.target
        return "met" if ok else "MISSES"


def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "s":
        return f"{value:,.2f} s"
    return f"{value:,.0f} {unit}".strip()


def report(rows: list[Row]) -> None:
    head = f"{'scenario':22} {'figure':50} {'measured':>12} {'target':>10} {'verdict':>7}  baseline (same run)"
    print("\n" + head)
    print("-" * (len(head) + 20))
    for r in rows:
        target = f"< {fmt(r.target, r.unit)}" if r.target is not None else "-"
        print(f"{r.scenario:22} {r.what:50} {fmt(r.value, r.unit):>12} {target:>10} {r.verdict:>7}  {r.baseline}")
        for note in r.notes:
            print(f"{'':22}   {note}")


def raise_file_limit() -> None:
    """A burst holds one socket per resident on each side; the servers started later inherit this limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


async def prepare(backend: str, args: argparse.Namespace, tmp: str, name: str) -> tuple[str, str | None]:
    """An empty, migrated database (and clean Redis keys) for one scenario: (database URL, Redis URL)."""
    if backend == "pg":
        db_url = args.database_url
        if db_url.rsplit("/", 1)[1] in KEPT_DATABASES:
            raise SystemExit(f"--database-url names {db_url.rsplit('/', 1)[1]!r}: this bench drops its database")
        await fresh_postgres(db_url)
        await clear_redis(args.redis_url, PREFIX)
        redis_url = args.redis_url
    else:
        db_url, redis_url = f"sqlite:///{tmp}/scale-{name}.db", None
    env = steward_env(base_env(), db_url, redis_url, prefix=PREFIX)
    subprocess.run([sys.executable, "-m", "bot.cli", "db", "upgrade"], env=env, cwd=tmp,  # noqa: ASYNC221
                   check=True, capture_output=True)
    return db_url, redis_url


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def label(backend: str) -> str:
    return "SQLite" if backend == "sqlite" else "PostgreSQL+Redis"


# -- 1. burst ----------------------------------------------------------------------------------------------------


@dataclass
class Burst:
    latencies: list[float] = field(default_factory=list)
    failed: Counter = field(default_factory=Counter)  # what the failures were
    replies: Counter = field(default_factory=Counter)
    seconds: float = 0.0


async def burst(url: str, openids: list[str], text: str, *, echo: bool) -> Burst:
    """Every openid sends `text` once, all at once; each latency runs from the moment the burst started (when
    all of them pressed send), so the last one answered counts its wait in the queue."""
    import aiohttp

    from bot.config import Settings
    from bot.simulator import Phone, message_xml
    from handlers.framework import BUSY_REPLY, ERROR_REPLY, SAVED_BUT_REPLY, UNSURE_REPLY

    failures = {BUSY_REPLY, ERROR_REPLY, SAVED_BUT_REPLY, UNSURE_REPLY, ""}
    result = Burst()
    msg_ids = iter(range(10**15 + int(time.time() * 1000) % 10**9 * 1000, 10**18))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        phone = Phone(url, Settings(wechat_token=TOKEN), session)
        # Signed and rendered before the clock starts: the client's own work stays out of the figure.
        ready = [(message_xml(o, "text", {"Content": text, "MsgId": next(msg_ids)}), phone.signed_query())
                 for o in openids]

        async def one(xml: str, query: dict[str, str]) -> None:
            try:
                answer = await phone.post_xml(xml, query)
            except (aiohttp.ClientError, TimeoutError) as e:
                result.failed[type(e).__name__] += 1
                return
            reply = answer.text or ""
            ok = answer.status == 200 and reply not in failures and (reply == "收到：" + text if echo else True)
            if ok:
                result.latencies.append(time.perf_counter() - started)
                result.replies[reply.split("\n", 1)[0][:30]] += 1
            else:
                result.failed[f"HTTP {answer.status} {reply[:30]!r}"] += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(xml, q) for xml, q in ready))
        result.seconds = time.perf_counter() - started
    return result


async def residents_named(db_url: str, prefix: str) -> tuple[int, int]:
    """(rows whose openid starts with `prefix`, openids among them more than once)."""
    from sqlmodel import col, select

    from storage.db import Database
    from storage.residents import Resident

    db = Database(async_url(db_url))
    try:
        async with db.read() as s:
            openids = (await s.exec(select(Resident.openid).where(col(Resident.openid).startswith(prefix)))).all()
    finally:
        await db.dispose()
    return len(openids), sum(n - 1 for n in Counter(openids).values() if n > 1)


STARTUP_TICK_S = 2.0


async def run_burst(backend: str, args: argparse.Namespace, tmp: str) -> list[Row]:
    from storage.db import Database
    from tests.factories import make_district

    db_url, redis_url = await prepare(backend, args, tmp, "burst")
    db = Database(async_url(db_url))
    await make_district(db)
    await db.dispose()
    tag = f"o_burst_{backend}_{int(time.time())}_"
    openids = [f"{tag}{i:04d}" for i in range(args.burst)]

    port = free_port()
    cmd = [*pin(1), sys.executable, str(REPO / "bench" / "gateway.py"), "--baseline-server", "--port", str(port)]
    with server(cmd, base_env(), tmp, Path(tmp, "echo.log")) as proc:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url, proc)
        echo = await burst(url, [f"o_echo_{i}" for i in range(args.burst)], "菜单", echo=True)

    port = free_port()
    env = {**steward_env(base_env(), db_url, redis_url, port, prefix=PREFIX)}
    # Last month's reports written now, as bench/flow.py does: in a district they are written once on the 1st,
    # not by the scheduler's first tick of a fresh data folder, which would land inside the burst.
    subprocess.run([sys.executable, "-m", "bot.cli", "report", "--make"], env=env, cwd=tmp,  # noqa: ASYNC221
                   check=True, capture_output=True)
    with bot(backend, 1, env, tmp) as proc:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url, proc, timeout=60)
        # The burst meets a server that has been up a while, not its first second: the scheduler's jobs make their
        # first run 1 s after the start (the reminders, the outbox, the due scans) and are let finish first.
        await asyncio.sleep(STARTUP_TICK_S)
        spy = None
        if args.profile:
            raw = Path(args.profile) / f"burst-{backend}.raw"
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(proc.pid), "-f", "raw", "-r", "200",
                "-o", str(raw), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(0.5)  # py-spy attached before the burst
        got = await burst(url, openids, "菜单", echo=False)
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes what it has
            await spy.wait()
            summarise(raw, raw.with_suffix(".txt"))
    rows_, twice = await residents_named(db_url, tag)

    answered = len(got.latencies)
    p99 = _pct(got.latencies, 0.99)
    base = (f"echo: {len(echo.latencies)}/{args.burst} answered, p50 {_pct(echo.latencies, 0.5):,.0f} ms, "
            f"p99 {_pct(echo.latencies, 0.99):,.0f} ms, all in {echo.seconds:.2f} s")
    name = f"burst, {label(backend)}"
    notes = [f"p50 {_pct(got.latencies, 0.5):,.0f} ms, max {_pct(got.latencies, 1.0):,.0f} ms; all answered in "
             f"{got.seconds:.2f} s; replies: " + ", ".join(f"{t!r} {n}" for t, n in got.replies.most_common(3))]
    if got.failed:
        notes.append("failed: " + ", ".join(f"{t} {n}" for t, n in got.failed.most_common(4)))
    if echo.failed:
        notes.append("echo failed: " + ", ".join(f"{t} {n}" for t, n in echo.failed.most_common(4)))
    notes.append(f"read back: {rows_} resident rows for {args.burst} first contacts, {twice} openids twice")
    return [
        Row(name, f"{args.burst} first contacts answered", answered, "", None, ok=answered == args.burst,
            baseline=f"echo {len(echo.latencies)}"),
        Row(name, "p99 from the burst's start", p99, "ms", BURST_P99_MS, baseline=base, notes=notes),
        Row(name, "resident rows read back (none twice)", rows_, "", None, ok=rows_ == args.burst and not twice),
    ]


# -- 2. broadcast ------------------------------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def seed_audience(db, building, count: int, now: dt.datetime) -> list[int]:
    """`count` bound, subscribed residents of `building`'s community, bulk-inserted: their ids."""
    from sqlmodel import col, select

    from bench.stats import CHUNK, insert_rows
    from storage.residents import Resident

    for first in range(0, count, CHUNK):
        rows = [{"openid": f"o_aud_{i:07d}", "name": "居民", "phone": f"139{i:08d}", "community_id":
                 building.community_id, "building_id": building.id, "room": f"{i % 3000 + 101}", "subscribed": True,
                 "notify_consultation": True, "bound_at": now, "last_contact_at": now, "created_at": now}
                for i in range(first, min(count, first + CHUNK))]
        await insert_rows(db, rows, table="resident")
    async with db.read() as s:
        return list((await s.exec(select(Resident.id).where(col(Resident.openid).startswith("o_aud_")))).all())


async def send_broadcast(db, actor, community, now: dt.datetime, text: str) -> tuple[int, int, int]:
    """What staff do (draft, 确认发送) and what the enqueue job then does, run back to back until every row is
    written: (rows written, job runs it took, the broadcast's id)."""
    from storage import broadcast as bc

    audience = bc.Audience(bc.AudienceKind.COMMUNITY, (community.id,), f"{community.name}全体居民")
    draft = await bc.save_draft(db, actor, text, audience, now)
    await bc.confirm(db, draft.id, actor, now)
    written, runs = 0, 0
    while True:
        runs += 1
        wrote = await bc.run_enqueue(db, now, bc.DEFAULT_QUIET)
        written += wrote
        row = await bc.get(db, draft.id)
        if row.enqueued_at is not None or not wrote:
            return written, runs, draft.id


async def bare_outbox_insert(db, resident_ids: list[int], now: dt.datetime, key: str = "bare") -> None:
    from bench.stats import insert_rows
    from storage.outbox import NoticeKind, NoticePriority, OutboxStatus

    rows = [{"idempotency_key": f"{key}:{rid}", "resident_id": rid, "kind": NoticeKind.BROADCAST.value,
             "text": "【基准】同样长度的一条通知", "payload": "{}", "status": OutboxStatus.PENDING, "attempts": 0,
             "priority": int(NoticePriority.NORMAL), "next_attempt_at": now, "created_at": now}
            for rid in resident_ids]
    await insert_rows(db, rows, table="outbox")


async def run_broadcast(backend: str, args: argparse.Namespace, tmp: str) -> list[Row]:
    from sqlmodel import col, func, select

    from storage import broadcast as bc
    from storage.actor import actor_for
    from storage.db import Database
    from storage.outbox import OutboxMessage
    from storage.roles import Role
    from tests.factories import grant, make_district, make_resident

    db_url, _redis = await prepare(backend, args, tmp, "broadcast")
    db = Database(async_url(db_url))
    name = f"broadcast, {label(backend)}"
    try:
        d = await make_district(db)
        now = dt.datetime.now(dt.UTC)
        building = d.buildings["B1"]
        community = d.communities["C1"]
        started = time.perf_counter()
        ids = await seed_audience(db, building, args.audience, now)
        print(f"[{name}] {len(ids):,} residents inserted in {time.perf_counter() - started:.1f} s", flush=True)
        staff = await make_resident(db, "o_scale_staff", d.buildings["B2"], phone="13700000000")
        await grant(db, staff, Role.COMMUNITY_STAFF, community.id)
        actor = await actor_for(db, staff.id)
        text = "【社区通知】本周六上午9点小区停水检修，请提前储水。"

        rss0, max0 = rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        written, runs, first_id = await send_broadcast(db, actor, community, now, text)
        took = time.perf_counter() - started
        rss1, max1 = rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        tracemalloc.start()
        await send_broadcast(db, actor, community, now, text + "（第二次）")
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()

        started = time.perf_counter()
        await bare_outbox_insert(db, ids, now)
        bare = time.perf_counter() - started
        tracemalloc.start()
        await bare_outbox_insert(db, ids, now, key="bare2")
        bare_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        async with db.read() as s:
            rows_ = (await s.exec(select(func.count()).select_from(OutboxMessage)
                                  .where(col(OutboxMessage.idempotency_key).startswith("bc:")))).one()
            outbox_rows = (await s.exec(select(func.count()).select_from(OutboxMessage))).one()

        # A broadcast's progress (the scheduler reads it every tick while one sends; 广播进度 on demand), beside
        # the same counts found by the key's prefix, as before 0029_outbox_broadcast.
        async def by_prefix():
            async with db.read() as s:
                query = (select(OutboxMessage.status, func.count())
                         .where(col(OutboxMessage.idempotency_key).like(f"bc:{first_id}:%"))
                         .group_by(OutboxMessage.status))
                return dict((await s.exec(query)).all())

        progress_ms, progress = await best_of(5, lambda: bc.progress(db, first_id))
        prefix_ms, prefixed = await best_of(5, by_prefix)
    finally:
        await db.dispose()
    # The job runs every 5 s: the runs a broadcast needs, at that pace (the wait for the first tick, 0-5 s, left out).
    pace = (runs - 1) * 5 + took / runs
    return [
        Row(name, f"outbox rows for {len(ids):,} residents, back to back", took, "s", BROADCAST_SECONDS,
            baseline=f"bare bulk INSERT of {len(ids):,} rows {bare:.2f} s ({took / bare:.1f}×)",
            notes=[f"{written:,} rows written in {runs} job runs ({bc.BATCH_SIZE} a batch, at most "
                   f"{bc.BATCHES_PER_RUN} batches or {bc.RUN_SECONDS:.0f} s a run); "
                   f"{rows_:,} outbox rows for the two sends"]),
        Row(name, "the same at the job's pace (every 5 s)", pace, "s", BROADCAST_SECONDS,
            baseline="(the scheduler's broadcast.enqueue job: every 5 s)",
            notes=["plus the wait for the job's first tick after 确认 (up to 5 s)"]),
        Row(name, "progress of one broadcast (best of 5)", progress_ms, "ms", PROGRESS_MS,
            baseline=f"the same counts by key prefix: {prefix_ms:,.1f} ms",
            notes=[f"{progress.total:,} rows of {outbox_rows:,} in the outbox; sent+failed+cancelled+pending "
                   f"{progress.sent + progress.failed + progress.cancelled + progress.pending:,}, by prefix "
                   f"{sum(prefixed.values()):,}"]),
        Row(name, "memory: traced peak of a second send", peak, "MB", None, ok=peak < 64,
            baseline=f"the bare INSERT holding all rows: {bare_peak:.0f} MB",
            notes=[f"RSS {rss0:.0f} → {rss1:.0f} MB over the first send (max RSS {max0:.0f} → {max1:.0f} MB)"]),
    ]


# -- 3. queues ---------------------------------------------------------------------------------------------------


async def best_of(runs: int, make) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = await make()
        best = min(best, time.perf_counter() - started)
    return best * 1000, result


def staff_actor(role, scope_id: int | None, resident_id: int = 1):
    from bench.stats import NOW
    from storage.actor import Actor
    from storage.roles import ROLE_SCOPE, RoleGrant

    grant = RoleGrant(id=resident_id, resident_id=resident_id, role=role.value, scope_type=ROLE_SCOPE[role],
                      scope_id=scope_id, granted_by="bench", granted_at=NOW)
    return Actor.resident(resident_id, (grant,))


async def db_community_code(db, community_id: int) -> str:
    from storage.org import Community

    async with db.read() as s:
        return (await s.get(Community, community_id)).code


async def run_queues(backend: str, args: argparse.Namespace, tmp: str) -> list[Row]:
    from sqlalchemy import update
    from sqlmodel import func, select

    from bench.stats import NOW, analyze, fill
    from bot.cli_needs import ledger_rows
    from storage import migrate, need_clocks
    from storage.db import Database
    from storage.needs import OPEN_STATUSES, Need
    from storage.needs.queries import NEW_STATUSES, LedgerFilter, ledger, list_needs, today_queue
    from storage.needs.rating import closed_query
    from storage.roles import Role
    from tests.factories import make_resident

    if backend == "pg":
        db_url = args.database_url
        if db_url.rsplit("/", 1)[1] in KEPT_DATABASES:
            raise SystemExit(f"--database-url names {db_url.rsplit('/', 1)[1]!r}: this bench drops its database")
        await fresh_postgres(db_url)
    else:
        db_url = f"sqlite:///{tmp}/scale-queues.db"
    db = Database(async_url(db_url))
    name = f"queues, {label(backend)}"
    rows: list[Row] = []
    try:
        await migrate.upgrade(db)
        started = time.perf_counter()
        org = await fill(db, args.needs)
        community, grids = org[0]
        # One grid worker has every 7th need of their community's first grid assigned to them (the seeded needs
        # have no assignee): "my needs" is their view.
        worker = await make_resident(db, "o_scale_worker")
        async with db.write() as s:
            await s.exec(update(Need).where(Need.community_id == community, Need.grid_id == grids[0],
                                            Need.id % 7 == 0).values(assignee_id=worker.id))
        await analyze(db)
        print(f"[{name}] {args.needs:,} needs inserted in {time.perf_counter() - started:.1f} s", flush=True)

        now = NOW
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        day_end = day_start + dt.timedelta(days=1)
        staff = staff_actor(Role.COMMUNITY_STAFF, community)
        admin = staff_actor(Role.ADMIN, None)
        mine = staff_actor(Role.GRID_WORKER, grids[1], resident_id=worker.id)

        async def count(*where) -> int:
            async with db.read() as s:
                return (await s.exec(select(func.count()).select_from(Need).where(*where))).one()

        base_c, n_c = await best_of(5, lambda: count(Need.community_id == community))
        base_d, n_d = await best_of(5, lambda: count())
        base_text = {"c": f"COUNT(*) of the community's {n_c:,} needs {base_c:.1f} ms",
                     "d": f"COUNT(*) of the district's {n_d:,} needs {base_d:.1f} ms"}

        async def queue(who: str, what: str, make, scope: str) -> None:
            took, result = await best_of(5, make)
            total = getattr(result, "total", None)
            if isinstance(result, list) and result and hasattr(result[0], "title"):  # 今日: its sections
                total = " / ".join(f"{s.title} {s.total}" for s in result)
            elif isinstance(result, list):  # rows of the command line's listing
                total = f"{len(result)} rows"
            rows.append(Row(name, f"{who}: {what}", took, "ms", QUEUE_MS, baseline=base_text[scope],
                            notes=[f"{total:,}" if isinstance(total, int) else f"{total}"]))

        communities = staff.communities
        await queue("community staff", "待分流 (chat, page 1)",
                    lambda: list_needs(db, statuses=NEW_STATUSES, community_ids=communities, size=8), "c")
        await queue("community staff", "超期 (console 台账 ?overdue=1)",
                    lambda: ledger(db, staff, LedgerFilter(overdue_at=now)), "c")
        code = await db_community_code(db, community)
        await queue("community staff", "超期 (steward needs --overdue --limit 20)",
                    lambda: ledger_rows(db, now, community=code, overdue=True, limit=20), "c")
        await queue("community staff", "今日 (console, 5 queues)",
                    lambda: today_queue(db, staff, now, day_start, day_end), "c")
        await queue("district admin", "待分流 (chat, page 1)",
                    lambda: list_needs(db, statuses=NEW_STATUSES, community_ids=None, size=8), "d")
        await queue("district admin", "超期 (console 台账 ?overdue=1)",
                    lambda: ledger(db, admin, LedgerFilter(overdue_at=now)), "d")
        await queue("district admin", "今日 (console, 5 queues)",
                    lambda: today_queue(db, admin, now, day_start, day_end), "d")
        await queue("grid worker", "my needs: 今日 (assigned to me or my grid)",
                    lambda: today_queue(db, mine, now, day_start, day_end), "c")
        await queue("grid worker", "my needs: 片区诉求 (chat, open, page 1)",
                    lambda: list_needs(db, statuses=OPEN_STATUSES, grid_ids={grids[1]}, newest_first=True, size=8),
                    "c")
        await queue("grid worker", "my needs: 台账 open, assigned to me",
                    lambda: ledger(db, staff_actor(Role.GRID_WORKER, -1, resident_id=worker.id),
                                   LedgerFilter(statuses=frozenset(OPEN_STATUSES))), "c")

        scans = {
            "needs.remind_due_soon": need_clocks.remind_query(now),
            "needs.chase_overdue": need_clocks.chase_query(now),
            "needs.report_to_district": need_clocks.district_query(now),
            "needs.late_response": need_clocks.late_response_query(now),
            "needs.feedback": need_clocks.feedback_query(now),
            "needs.rating_reminder": need_clocks.unrated_query(now),
            "needs.close_unrated": closed_query(now),
        }
        for job, query in scans.items():
            async def scan(query=query) -> list:
                async with db.read() as s:
                    return list((await s.exec(query)).all())
            took, found = await best_of(5, scan)
            rows.append(Row(name, f"due scan {job}", took, "ms", SCAN_MS, baseline=base_text["d"],
                            notes=[f"{len(found)} due found (a run takes at most 200)"]))
        took, counts = await best_of(5, lambda: need_clocks.community_digest(db, community, now))
        rows.append(Row(name, "due scan needs.morning_digest (one community)", took, "ms", SCAN_MS,
                        baseline=base_text["c"], notes=[str(counts)]))
    finally:
        await db.dispose()
    return rows


# -- main --------------------------------------------------------------------------------------------------------


SCENARIOS = {"burst": run_burst, "broadcast": run_broadcast, "queues": run_queues}


async def main_async(args: argparse.Namespace) -> list[Row]:
    raise_file_limit()
    if pin(1):
        os.sched_setaffinity(0, {0})  # the client here, the servers on core 1
    rows: list[Row] = []
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    backends = ["sqlite", "pg"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory(prefix="steward-scale-") as tmp:
        for scenario in scenarios:
            for backend in backends:
                got = await SCENARIOS[scenario](backend, args, tmp)
                report(got)
                rows += got
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--backend", choices=["sqlite", "pg", "both"], default="both")
    parser.add_argument("--burst", type=int, default=1000, help="first contacts at once (default 1,000)")
    parser.add_argument("--audience", type=int, default=100_000, help="the broadcast's residents (default 100,000)")
    parser.add_argument("--needs", type=int, default=1_000_000, help="the district's needs (default 1,000,000)")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/scale_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--profile", help="a folder: py-spy samples of the bot during the burst (PyPI py-spy)")
    args = parser.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    rows = asyncio.run(main_async(args))
    print("\n== all figures ==")
    report(rows)


if __name__ == "__main__":
    main()
