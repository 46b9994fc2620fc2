"""The write path under load: residents reporting needs through `steward serve`, beside the bare echo, same run.

    python bench/flow.py [--backend sqlite|pg|both] [--workers 1 2] [--seconds 10] [--residents 50]
                         [--database-url postgresql://postgres@127.0.0.1:5432/scale] [--redis-url redis://…/3]

Per backend and worker count, in one run with one Python client (bench/gateway.py's load generator style):
  (a) the bare aiohttp + wechatpy echo of bench/gateway.py: each sender sends 你好 in a loop;
  (r) the report flow: `--residents` bound residents, each looping 反映 <text> → 1 (是) → 跳过 → 1 (确认提交) → 进度,
      reading each reply to choose the next message as a person would (2 仍然新建 when a similar need is
      offered, N 仍然新建 from a list). Each resident lives in its own community, grid and building: the 附议
      search runs on every report but finds only the resident's own needs, which it does not offer.
Prints msgs/s, reports/s, p50/p99 latency and errors (non-200, empty, busy/error or unexpected replies), then
reads the database back: reports acknowledged (a ticket in a reply) against rows, lost (told, no row), saved
but never told, ticket numbers given twice. Targets (issue "the write path at scale"): PostgreSQL + Redis
≥ 0.25× the echo in msgs/s, ≥ 150 reports/s, p99 < 100 ms; SQLite ≥ 0.15×, p99 < 200 ms; 2 workers ≥ 1.7× one.

The server is pinned to core 1 and the client to core 0 when taskset exists (PostgreSQL and Redis float).
The PostgreSQL database named by --database-url is dropped and created afresh; Redis keys under the run's
prefix are deleted first. `--profile DIR` attaches py-spy (PyPI `py-spy`) to the one-worker bot for the
measured window and writes DIR/<backend><workers>.txt: on-CPU samples (idle pool threads left out), the
functions holding the most (own and total), then the collapsed stacks: a change is weighed by what it removed.
Several workers need Redis, so they run on PostgreSQL + Redis only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

THIS = Path(__file__).resolve()
REPO = THIS.parent.parent
sys.path.insert(0, str(REPO))

from bench.gateway import TOKEN, _pct, free_port, pin, server, summarise, wait_healthy  # noqa: E402

TICKET = re.compile(r"诉求编号：(\d{8}-\d{4,})")
NEW_ANYWAY = re.compile(r"^(\d+)\. 仍然新建", re.M)
REPORT_TEXT = "{openid}第{n}次：楼道灯坏了，晚上看不见"
TARGETS = {"pg": (0.25, 100.0), "sqlite": (0.15, 200.0)}  # (× echo in msgs/s, p99 ms)
TARGET_REPORTS = 150.0  # reports/s on PostgreSQL + Redis
TARGET_SCALING = 1.7  # two workers against one


@dataclass
class Result:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    unexpected: list[str] = field(default_factory=list)
    told: dict[str, str] = field(default_factory=dict)  # ticket → the openid it was told to
    told_twice: int = 0  # the same ticket named in two submit replies
    readback: str = ""
    replies: Counter = field(default_factory=Counter)  # the first line of each reply, to see where time goes

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def reports(self) -> float:
        return len(self.told) / self.seconds if self.seconds else 0.0


def next_message(reply: str, openid: str, counter: list[int]) -> str:
    """What a reporting resident sends next, reading the reply; anything unforeseen starts a new report."""
    if "1. 是" in reply:
        return "1"
    if new := NEW_ANYWAY.search(reply):
        return new.group(1)
    if "照片" in reply and "跳过" in reply:
        return "跳过"
    if "1. 确认提交" in reply:
        return "1"
    if TICKET.search(reply):
        return "进度"
    counter[0] += 1
    return "反映 " + REPORT_TEXT.format(openid=openid, n=counter[0])


async def drive(url: str, openids: list[str], seconds: float, *, echo: bool, warmup: float = 1.0) -> Result:
    """Each openid is one sender with one message in flight, for `seconds` after a warm-up."""
    import aiohttp

    from bot.config import Settings
    from bot.simulator import Phone, message_xml
    from handlers.framework import BUSY_REPLY, ERROR_REPLY, SAVED_BUT_REPLY, UNSURE_REPLY

    failures = {BUSY_REPLY, ERROR_REPLY, SAVED_BUT_REPLY, UNSURE_REPLY, ""}
    result = Result("echo" if echo else "report flow")
    measuring = False
    msg_ids = iter(range(10**15 + int(time.time() * 1000) % 10**9 * 1000, 10**18))
    connector = aiohttp.TCPConnector(limit=len(openids))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        phone = Phone(url, Settings(wechat_token=TOKEN), session)

        # Each sender's place in its flow carries over from the warm-up into the measured window.
        where: dict[str, tuple[str, list[int]]] = {}

        async def sender(openid: str, until_ref: list[float]) -> None:
            text, counter = where.get(openid) or ("", [0])
            text = text or ("你好" if echo else next_message("", openid, counter))
            while time.monotonic() < until_ref[0]:
                xml = message_xml(openid, "text", {"Content": text, "MsgId": next(msg_ids)})
                started = time.perf_counter()
                try:
                    answer = await phone.post_xml(xml)  # a fresh signature: the gateway refuses a replayed one
                except (aiohttp.ClientError, TimeoutError):
                    if measuring:
                        result.errors += 1
                    continue
                elapsed = time.perf_counter() - started
                reply = answer.text or ""
                ok = answer.status == 200 and reply not in failures
                ok = ok and (reply == "收到：你好" if echo else True)
                if measuring:
                    result.replies[reply.split("\n", 1)[0][:24]] += 1
                    if ok:
                        result.latencies.append(elapsed)
                    else:
                        result.errors += 1
                        if len(result.unexpected) < 3:
                            result.unexpected.append(f"{text!r} → HTTP {answer.status} {reply[:50]!r}")
                if not echo:
                    for ticket in TICKET.findall(reply):
                        if measuring:
                            if ticket in result.told:
                                result.told_twice += 1
                            result.told[ticket] = openid
                    text = next_message(reply, openid, counter)
            where[openid] = (text, counter)

        until = [time.monotonic() + warmup]
        await asyncio.gather(*(sender(o, until) for o in openids))
        # Tickets told during the warm-up are not counted: the read-back below only counts rows of this window
        # by ticket, so it matches what was measured.
        measuring = True
        started = time.monotonic()
        until[0] = started + seconds
        await asyncio.gather(*(sender(o, until) for o in openids))
        result.seconds = time.monotonic() - started
    return result


# -- set-up ----------------------------------------------------------------------------------------------------


def steward_env(base_env: dict[str, str], db_url: str, redis_url: str | None, port: int | None = None,
                prefix: str = "steward-flow:") -> dict[str, str]:
    env = {**base_env, "STEWARD_DATABASE_URL": db_url, "STEWARD_WECHAT_TOKEN": TOKEN,
           "STEWARD_WECHAT_API_BASE": "http://127.0.0.1:9", "STEWARD_ENV_FILE": "/nonexistent",
           "STEWARD_REDIS_PREFIX": prefix}
    if redis_url:
        env["STEWARD_REDIS_URL"] = redis_url
    if port:
        env["STEWARD_PORT"] = str(port)
    return env


def async_url(url: str) -> str:
    from storage.settings import _database_url

    return _database_url(url, "STEWARD_DATABASE_URL")


async def fresh_postgres(url: str) -> None:
    import asyncpg

    base, name = url.rsplit("/", 1)
    conn = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://") + "/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def clear_redis(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    keys = [k async for k in r.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await r.delete(*keys)
    await r.aclose()


async def seed(db_url: str, openids: list[str]) -> None:
    """One community (with one grid and one building) per resident: the 附议 offer compares a report with the
    open needs of its community, and 50 residents filing the same text in one community all day is not a
    district; the offer's cost is still paid on every report (the search runs, it finds only the resident's own)."""
    from storage.db import Database
    from storage.org import Building, Community, Grid
    from tests.factories import make_district, make_resident

    db = Database(async_url(db_url))
    d = await make_district(db)
    street = d.streets["S1"]
    for i, openid in enumerate(openids):
        async with db.write() as s:
            community = Community(code=f"BC{i:03d}", name=f"压测社区{i}", street_id=street.id)
            s.add(community)
            await s.flush()
            grid = Grid(code=f"BG{i:03d}", name=f"压测网格{i}", community_id=community.id)
            s.add(grid)
            await s.flush()
            building = Building(code=f"BB{i:03d}", name=f"{i + 10}号楼", grid_id=grid.id, community_id=community.id)
            s.add(building)
        await make_resident(db, openid, building, room=f"{i + 1}01", phone=f"1380000{i:04d}")
    await db.dispose()


async def read_back(db_url: str, result: Result, openids: list[str]) -> str:
    """Acknowledged tickets against the rows of the measured window (rows whose ticket was told, plus rows
    created after the first told ticket that nobody was told about)."""
    from sqlmodel import col, select

    from storage.db import Database
    from storage.needs import Need
    from storage.residents import Resident

    db = Database(async_url(db_url))
    async with db.read() as s:
        rows = (await s.exec(
            select(Resident.openid, Need.ticket, Need.id)
            .join(Need, Need.reporter_id == Resident.id)
            .where(col(Resident.openid).in_(openids))
        )).all()
    await db.dispose()
    owner = {}
    dup_rows = sum(n - 1 for n in Counter(t for _, t, _ in rows).values() if n > 1)
    for openid, ticket, _ in rows:
        owner[ticket] = openid
    told = result.told
    lost = sum(1 for t in told if t not in owner)
    wrong = sum(1 for t, o in told.items() if t in owner and owner[t] != o)
    first = min((i for _, t, i in rows if t in told), default=None)
    last = max((i for _, t, i in rows if t in told), default=None)
    window = [t for _, t, i in rows if first is not None and first <= i <= last]
    untold = sum(1 for t in window if t not in told)
    return (f"{len(told)} acknowledged, {len(window)} rows in the window; lost {lost}, saved-untold {untold}, "
            f"ticket twice (rows {dup_rows}, replies {result.told_twice}), someone else's {wrong}")


@contextlib.contextmanager
def bot(backend: str, workers: int, env: dict[str, str], tmp: str):
    cmd = [sys.executable, "-m", "bot.cli", "serve"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    # One worker on the server's core; several on every core but the client's — or, on a machine with fewer
    # cores than workers + 1, on all of them, sharing with the client as the 2-core measure asks.
    cpus = os.cpu_count() or 1
    if workers == 1:
        cores = "1"
    elif cpus > workers:
        cores = f"1-{workers}"
    else:
        cores = f"0-{cpus - 1}"
    prefix = pin(1) if cores == "1" else ["/usr/bin/taskset", "-c", cores]
    log = Path(tmp) / f"serve-{backend}{workers}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*prefix, *cmd], env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    except SystemExit:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def run_backend(backend: str, args: argparse.Namespace, tmp: str) -> list[tuple[str, Result, Result]]:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
    base_env["PYTHONPATH"] = str(REPO) + os.pathsep + base_env.get("PYTHONPATH", "")
    rows = []
    for workers in args.workers:
        if workers > 1 and backend == "sqlite":
            print("SQLite: several workers need Redis for the conversation state; not run", file=sys.stderr)
            continue
        tag = f"{backend}{workers}"
        openids = [f"o_flow_{tag}_{i:03d}" for i in range(args.residents)]
        if backend == "pg":
            db_url = args.database_url
            await fresh_postgres(db_url)
            await clear_redis(args.redis_url, "steward-flow:")
            redis_url = args.redis_url
        else:
            db_url = f"sqlite:///{tmp}/flow-{tag}.db"
            redis_url = None
        env = steward_env(base_env, db_url, redis_url)
        subprocess.run([sys.executable, "-m", "bot.cli", "db", "upgrade"], env=env, cwd=tmp,  # noqa: ASYNC221
                       check=True, capture_output=True)
        await seed(db_url, openids)
        # Last month's reports written now, not by the scheduler's first run inside the measured window: in a
        # district they are written once on the 1st, not at every start.
        subprocess.run([sys.executable, "-m", "bot.cli", "report", "--make"], env=env, cwd=tmp,  # noqa: ASYNC221
                       check=True, capture_output=True)

        port = free_port()
        with server([*pin(1), sys.executable, str(REPO / "bench" / "gateway.py"), "--baseline-server", "--port",
                     str(port)], base_env, tmp, Path(tmp, "echo.log")) as proc:
            url = f"http://127.0.0.1:{port}"
            await wait_healthy(url, proc)
            echo = await drive(url, [f"o_echo_{i}" for i in range(args.residents)], args.seconds, echo=True)

        port = free_port()
        with bot(backend, workers, {**env, "STEWARD_PORT": str(port)}, tmp) as proc:
            url = f"http://127.0.0.1:{port}"
            await wait_healthy(url, proc, timeout=60)
            spy = None
            if args.profile and workers == 1:
                spy = await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(proc.pid), "-f", "raw",
                    "-r", "200", "-d", str(int(args.seconds + 1.5)), "-o", str(Path(args.profile) / f"{tag}.raw"),
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            flow = await drive(url, openids, args.seconds, echo=False)
            if spy is not None:
                await spy.wait()
                summarise(Path(args.profile) / f"{tag}.raw", Path(args.profile) / f"{tag}.txt")
        flow.readback = await read_back(db_url, flow, openids)
        rows.append((f"{'SQLite' if backend == 'sqlite' else 'PostgreSQL+Redis'}, {workers} worker"
                     f"{'s' if workers > 1 else ''}", echo, flow))
    return rows


def report(rows: list[tuple[str, Result, Result]], residents: int) -> None:
    print(f"\n{residents} senders, one message in flight each, Python client on loopback; latency at the client.\n")
    head = (f"{'backend, workers':28} {'scenario':12} {'msgs/s':>8} {'reports/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'errors':>6} {'vs echo':>8}")
    print(head)
    print("-" * len(head))
    one_worker: dict[str, float] = {}
    verdicts = []
    for name, echo, flow in rows:
        for r in (echo, flow):
            ratio = f"{r.rate / echo.rate:.2f}×" if r is flow and echo.rate else "-"
            reports = f"{r.reports:9.0f}" if r is flow else f"{'-':>9}"
            print(f"{name:28} {r.name:12} {r.rate:8.0f} {reports} {_pct(r.latencies, 0.5):8.1f} "
                  f"{_pct(r.latencies, 0.99):8.1f} {r.errors:6d} {ratio:>8}")
        backend = "sqlite" if name.startswith("SQLite") else "pg"
        ratio_target, p99_target = TARGETS[backend]
        ratio = flow.rate / echo.rate if echo.rate else 0.0
        p99 = _pct(flow.latencies, 0.99)
        ok = ratio >= ratio_target and p99 < p99_target and (backend != "pg" or flow.reports >= TARGET_REPORTS)
        line = f"{name}: {ratio:.2f}× echo, {flow.reports:.0f} reports/s, p99 {p99:.0f} ms"
        if "1 worker" in name:
            one_worker[backend] = ratio
        elif one_worker.get(backend):
            scale = ratio / one_worker[backend]
            line += f", {scale:.2f}× one worker (vs echo)"
            ok = ok and scale >= TARGET_SCALING
        verdicts.append(f"{line} → {'meets' if ok else 'MISSES'}")
    print("\nread back from the database:")
    for name, _echo, flow in rows:
        print(f"  {name}: {flow.readback}")
        print("    replies: " + ", ".join(f"{text!r} {n}" for text, n in flow.replies.most_common(8)))
        for line in flow.unexpected:
            print(f"    e.g. {line}")
    print("\n" + "\n".join(verdicts))


async def main_async(args: argparse.Namespace) -> None:
    if pin(1):
        os.sched_setaffinity(0, {0})
    rows = []
    with tempfile.TemporaryDirectory(prefix="steward-flow-") as tmp:
        for backend in (["sqlite", "pg"] if args.backend == "both" else [args.backend]):
            rows += await run_backend(backend, args, tmp)
    report(rows, args.residents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "pg", "both"], default="both")
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--residents", type=int, default=50)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/scale")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/3")
    parser.add_argument("--profile", help="a folder: py-spy samples of the one-worker bot during the measured run")
    args = parser.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
