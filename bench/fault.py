"""Residents keep reporting while Redis, then PostgreSQL, is cut and frozen: what they were told against what
the database holds.

    python bench/fault.py [--residents 40] [--fault-seconds 10] [--database-url postgresql://…/steward_fault]

The production shape on this machine: two `steward serve --no-scheduler` workers and one `steward scheduler`,
on PostgreSQL + Redis, each service behind a TCP proxy this script controls (tests/tcpproxy.py), WeChat played
by the fake API server. Each resident loops the report flow (反映 → text → 1 → 跳过 → 1), reading each reply to
choose the next message as a person would, through either worker at random (a load balancer). Phases: steady,
Redis cut, back, Redis frozen, back, PostgreSQL cut, back, PostgreSQL frozen, back.

Prints, per phase and in total: HTTP 500s, answers later than WeChat's 5 s, busy replies; then, read back from
the database: reports lost (told a ticket, no row), reports saved but never told (neither reply nor push names
the ticket), duplicates (one report text saved twice), replies naming a ticket the database gives to someone
else; and seconds until every resident was answered normally after each service returned. Target: all zero,
recovery ≤ 10 s. The database named by --database-url is dropped and created afresh.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from bot.config import Settings  # noqa: E402
from bot.fake_wechat import FakeWeChat  # noqa: E402
from bot.simulator import Phone  # noqa: E402
from handlers.framework import BUSY_REPLY, ERROR_REPLY, SAVED_BUT_REPLY, UNSURE_REPLY  # noqa: E402
from handlers.needs import REPORT_UNSURE  # noqa: E402
from tests.tcpproxy import TcpProxy  # noqa: E402

TOKEN = "faultbench"
TICKET = re.compile(r"诉求编号：(\d{8}-\d{4,})")
WECHAT_WINDOW = 5.0


@dataclass
class Resident:
    openid: str
    reported: int = 0  # texts started
    told: set[str] = field(default_factory=set)  # tickets named in a reply
    next: str = "TEXT"
    pending_text: str = ""


@dataclass
class Tally:
    sent: int = 0
    http_500: int = 0
    other_status: int = 0
    late: int = 0  # no answer within WeChat's 5 s
    busy: int = 0
    error: int = 0
    unsure: int = 0
    success_only: int = 0


class Load:
    def __init__(self, urls: list[str], settings: Settings, residents: list[Resident]) -> None:
        self.urls, self.settings, self.residents = urls, settings, residents
        self.phase = "steady"
        self.tallies: dict[str, Tally] = defaultdict(Tally)
        self.last_normal: dict[str, float] = {}
        self.stop = False

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=WECHAT_WINDOW + 5)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:
            phones = [Phone(url, self.settings, session=http) for url in self.urls]
            await asyncio.gather(*(self._resident(r, phones) for r in self.residents))

    async def _resident(self, r: Resident, phones: list[Phone]) -> None:
        while not self.stop:
            text = r.next
            if text == "TEXT":
                r.reported += 1
                r.pending_text = f"{r.openid}第{r.reported}次：楼道灯坏了，晚上看不见"
                text = "反映 " + r.pending_text
            tally = self.tallies[self.phase]
            tally.sent += 1
            started = time.monotonic()
            try:
                answer = await random.choice(phones).text(r.openid, text)
            except (TimeoutError, aiohttp.ClientError):
                tally.late += 1
                r.next = "TEXT"
                await asyncio.sleep(0.2)
                continue
            if time.monotonic() - started > WECHAT_WINDOW:
                tally.late += 1
            if answer.status >= 500:
                tally.http_500 += 1
            elif answer.status != 200:
                tally.other_status += 1
            reply = answer.text
            for ticket in TICKET.findall(reply):
                r.told.add(ticket)
            if reply == BUSY_REPLY:
                tally.busy += 1
            elif reply == ERROR_REPLY:
                tally.error += 1
            elif reply in (UNSURE_REPLY, SAVED_BUT_REPLY, REPORT_UNSURE):
                tally.unsure += 1
            elif reply == "":
                tally.success_only += 1
            else:
                self.last_normal[r.openid] = time.monotonic()
            r.next = _next_message(reply, r.next)
            await asyncio.sleep(0.05 if reply in ("", BUSY_REPLY) else 0.01)


NEW_ANYWAY = re.compile(r"^(\d+)\. 仍然新建", re.M)


def _next_message(reply: str, previous: str) -> str:
    """What a resident sends next, reading the reply as a person would; anything else starts a new report."""
    if "1. 是" in reply:
        return "1"
    if new := NEW_ANYWAY.search(reply):  # 附议 offered (one need: 2; a list of three: 4): file it anyway
        return new.group(1)
    if "照片" in reply and "跳过" in reply:
        return "跳过"
    if "1. 确认提交" in reply:
        return "1"
    return "TEXT"


# -- the production shape -------------------------------------------------------------------------------------


def _env(db_url: str, redis_url: str, api_base: str, port: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
    env.update(
        STEWARD_DATABASE_URL=db_url, STEWARD_REDIS_URL=redis_url, STEWARD_WECHAT_TOKEN=TOKEN,
        STEWARD_WECHAT_API_BASE=api_base, STEWARD_REDIS_PREFIX="steward-fault:", STEWARD_ENV_FILE="/nonexistent",
    )
    if port:
        env["STEWARD_PORT"] = str(port)
    return env


def _steward() -> list[str]:
    return [sys.executable, "-c", "from bot.cli import main; main()"]


async def _wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as answer:
                    if answer.status in (200, 503):
                        return
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.3)  # not listening yet
                continue
            await asyncio.sleep(0.3)
    raise SystemExit(f"{url} did not come up")


async def _fresh_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _seed(db_url: str, n: int) -> list[Resident]:
    from storage.db import Database
    from tests.factories import make_district, make_resident

    db = Database(db_url)
    d = await make_district(db)
    residents = []
    for i in range(n):
        openid = f"o_fault_{i:04d}"
        await make_resident(db, openid, d.buildings["B1"], room=f"{i + 1}01", phone=f"1380000{i:04d}")
        residents.append(Resident(openid))
    await db.dispose()
    return residents


async def _read_back(db_url: str) -> dict[str, list[tuple[str, str]]]:
    from sqlmodel import select

    from storage.db import Database
    from storage.needs import Need
    from storage.residents import Resident as Row

    db = Database(db_url)
    async with db.read() as s:
        rows = (await s.exec(select(Row.openid, Need.ticket, Need.text).join(Need, Need.reporter_id == Row.id))).all()
    await db.dispose()
    saved: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for openid, ticket, text in rows:
        saved[openid].append((ticket, text))
    return saved


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--residents", type=int, default=40)
    parser.add_argument("--fault-seconds", type=float, default=10.0)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/steward_fault")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--logs", help="a folder for the workers' and the scheduler's logs (default: discarded)")
    args = parser.parse_args()

    base, name = args.database_url.rsplit("/", 1)
    await _fresh_database(base + "/postgres", name)
    pg_host, pg_port = base.split("@")[-1].split("//")[-1].split(":")
    redis_host, redis_port = args.redis_url.split("//")[1].split("/")[0].split(":")
    pg = await TcpProxy(pg_host, int(pg_port)).start()
    redis = await TcpProxy(redis_host, int(redis_port)).start()
    db_via_proxy = pg.url_for(args.database_url)
    redis_via_proxy = redis.url_for(args.redis_url)
    fake = FakeWeChat(max_recorded=1_000_000)
    await fake.start()
    # A clean slate in Redis for this run's prefix.
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(args.redis_url)
    keys = [k async for k in r.scan_iter(match="steward-fault:*", count=1000)]
    if keys:
        await r.delete(*keys)
    await r.aclose()

    # Set-up, before any load: blocking is fine here.
    subprocess.run([*_steward(), "db", "upgrade"], env=_env(args.database_url, args.redis_url, fake.base_url),  # noqa: ASYNC221
                   check=True, cwd=REPO, capture_output=True)
    residents = await _seed("postgresql+asyncpg://" + args.database_url.split("://", 1)[1], args.residents)

    ports = [_free_port(), _free_port()]
    procs = []

    def log_file(name: str):
        if not args.logs:
            return subprocess.DEVNULL
        Path(args.logs).mkdir(parents=True, exist_ok=True)
        return open(Path(args.logs) / f"{name}.log", "w")

    for n, port in enumerate(ports, 1):
        out = log_file(f"worker{n}")
        procs.append(subprocess.Popen([*_steward(), "serve", "--no-scheduler"], cwd=REPO,  # noqa: ASYNC220
                                      env=_env(db_via_proxy, redis_via_proxy, fake.base_url, port),
                                      stdout=out, stderr=subprocess.STDOUT))
    out = log_file("scheduler")
    procs.append(subprocess.Popen([*_steward(), "scheduler"], cwd=REPO,  # noqa: ASYNC220
                                  env=_env(db_via_proxy, redis_via_proxy, fake.base_url),
                                  stdout=out, stderr=subprocess.STDOUT))
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url in urls:
            await _wait_http(url + "/healthz")
        settings = Settings(wechat_token=TOKEN)
        load = Load(urls, settings, residents)
        runner = asyncio.create_task(load.run())
        recoveries: dict[str, float | None] = {}
        await asyncio.sleep(5)
        for service, proxy in (("Redis", redis), ("PostgreSQL", pg)):
            for fault in ("cut", "freeze"):
                phase = f"{service} {'cut' if fault == 'cut' else 'frozen'}"
                print(f"… {phase} for {args.fault_seconds:g} s", flush=True)
                load.phase = phase
                getattr(proxy, fault)()
                await asyncio.sleep(args.fault_seconds)
                proxy.restore()
                back = time.monotonic()
                load.phase = f"after {phase}"
                recoveries[phase] = await _recovery(load, back, limit=30)
                await asyncio.sleep(max(0.0, 10 - (time.monotonic() - back)))
        load.phase = "drain"
        load.stop = True
        await runner
        await asyncio.sleep(6)  # late replies and the scheduler's drain reach the fake API
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        await pg.stop()
        await redis.stop()

    saved = await _read_back("postgresql+asyncpg://" + args.database_url.split("://", 1)[1])
    await fake.stop()
    pushed: dict[str, set[str]] = defaultdict(set)
    for entry in fake.sent:
        for ticket in TICKET.findall(entry.get("text") or str(entry.get("data") or "")):
            pushed[entry["openid"]].add(ticket)
    owners = {ticket: openid for openid, rows in saved.items() for ticket, _ in rows}
    lost = silent = dupes = wrong_owner = 0
    untold: list[str] = []
    trace: list[str] = []
    for r in residents:
        rows = saved.get(r.openid, [])
        tickets = {t for t, _ in rows}
        told = r.told | pushed[r.openid]
        wrong_owner += sum(1 for t in r.told if t in owners and owners[t] != r.openid)
        lost += sum(1 for t in r.told if t not in owners)
        silent += sum(1 for t in tickets if t not in told)
        untold += [f"{t} (…{r.openid[-6:]})" for t in sorted(tickets - told)]
        if tickets - told:  # what that resident was pushed, for the trace
            trace.append(f"  {r.openid}, saved {sorted(tickets - told)}, pushed "
                         f"{[e.get('text') for e in fake.sent if e['openid'] == r.openid]}")
        dupes += sum(n - 1 for n in Counter(text for _, text in rows).values() if n > 1)
    total = Tally()
    print()
    columns = ("sent", "http_500", "late", "busy", "error", "unsure", "success_only")
    print(f"{'phase':<24}{'sent':>7}{'500s':>6}{'>5 s':>6}{'busy':>6}{'error':>6}{'unsure':>7}{'success':>8}")
    for phase, t in [*load.tallies.items(), ("total", total)]:
        if phase == "total":
            for name in (*columns, "other_status"):
                setattr(total, name, sum(getattr(x, name) for x in load.tallies.values()))
        print(f"{phase:<24}{t.sent:>7}{t.http_500:>6}{t.late:>6}{t.busy:>6}{t.error:>6}{t.unsure:>7}"
              f"{t.success_only:>8}")
    reports = sum(len(v) for v in saved.values())
    print()
    print(f"reports saved: {reports} from {args.residents} residents ({sum(r.reported for r in residents)} started)")
    print(f"HTTP 500s: {total.http_500}   other non-200: {total.other_status}   answers past 5 s: {total.late}")
    print(f"replies that disagree with the database: lost (told a ticket, no row) {lost}, "
          f"ticket of someone else {wrong_owner}, saved but never told {silent}"
          + (f": {', '.join(untold[:10])}" if untold else ""))
    if trace:
        print("\n".join(trace[:10]))
    print(f"duplicates (one report text saved twice): {dupes}")
    for phase, seconds in recoveries.items():
        shown = f"{seconds:.1f} s" if seconds is not None else "not within 30 s"
        print(f"every resident answered normally after {phase} ended: {shown}")
    bad = total.http_500 + total.late + total.error + lost + wrong_owner + silent + dupes
    slow = [p for p, s in recoveries.items() if s is None or s > 10]
    print("TARGET MET" if not bad and not slow else "TARGET MISSED")


async def _recovery(load: Load, since: float, limit: float) -> float | None:
    deadline = since + limit
    while time.monotonic() < deadline:
        if all(load.last_normal.get(r.openid, 0) > since for r in load.residents):
            return max(load.last_normal[r.openid] for r in load.residents) - since
        await asyncio.sleep(0.1)
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    asyncio.run(main())
