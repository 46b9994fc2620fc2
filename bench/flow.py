"""The write path under load: residents and staff working through `steward serve`, beside the bare echo, same run.

    python bench/flow.py [--scenario report|triage|booking|all] [--backend sqlite|pg|both] [--workers 1 2]
                         [--seconds 10] [--residents 50] [--needs-per-staff 2000]
                         [--database-url postgresql://postgres@127.0.0.1:5432/scale] [--redis-url redis://…/3]

Per backend and worker count, in one run with one Python client (bench/gateway.py's load generator style):
  (a) the bare aiohttp + wechatpy echo of bench/gateway.py: each sender sends 你好 in a loop;
  (r) report: `--residents` bound residents, each looping 反映 <text> → 1 (是) → 跳过 → 1 (确认提交) → 进度,
      reading each reply to choose the next message as a person would (2 仍然新建 when a similar need is
      offered, N 仍然新建 from a list). Each resident lives in its own community, grid and building: the 附议
      search runs on every report but finds only the resident's own needs, which it does not offer.
  (t) triage: `--residents` community staff, two per community, each community holding 2 × `--needs-per-staff`
      untriaged needs (bulk-inserted, each with its reporter as follower and its 提交 event), each staff member
      looping the guided 待分流 flow: 待分流 → a random one of the eight listed → 1 (A) or 3 (C) → 0 (不指派).
      The two staff of a community list the same queue, so they sometimes pick the same need.
  (b) booking: `--residents` bound residents, 25 to a community, each community's 阳光17议 session holding 10
      seats (fewer than its residents: the waitlist is used), each resident looping 议事 → 1 (预约座位) →
      取消预约 → 1 (确定取消): a cancelled seat goes to the head of the waitlist (told by push).
Each scenario runs on a fresh database and a fresh server, beside the one echo figure of its backend.
Prints msgs/s, done/s (reports filed, needs triaged, bookings answered), p50/p99 latency, errors (non-200,
empty, busy/error or unforeseen replies) and the CPU per answered message of the bot's processes and of PostgreSQL
and Redis (from /proc over the measured window: steadier than msgs/s on shared cores), p50/p99 by message, then
reads the database back:
  report: reports acknowledged (a ticket in a reply) against rows, lost (told, no row), saved but never told,
      ticket numbers given twice.
  triage: needs triaged against what staff were told (lost, done but untold, told to two staff), needs with
      two 分流定级 events or triaged by two staff, each staff member's count of 已分流 against their events,
      and, after the run, each community's 「待分流 N 条」 against its untriaged rows.
  booking: the most confirmed seats of a session seen during the run (sampled every 0.2 s) and at the end
      against its seats, a resident with two rows for one session, a check-in code twice, replies that
      contradict the resident's own earlier ones (您已预约过 after 已取消预约), and, after the run, each
      resident's 「议事」 card (已预约 + code / 候补 / 尚未预约, 剩余名额) against the rows.
Targets (issue "the write path at scale", the report flow): PostgreSQL + Redis ≥ 0.25× the echo in msgs/s,
≥ 150 reports/s, p99 < 100 ms; SQLite ≥ 0.15×, p99 < 200 ms; 2 workers ≥ 1.7× one. Triage and booking have
no targets of their own: they are printed beside the echo.

The server is pinned to core 1 and the client to core 0 when taskset exists (PostgreSQL and Redis float).
The PostgreSQL database named by --database-url is dropped and created afresh; Redis keys under the run's
prefix are deleted first. `--profile DIR` attaches py-spy (PyPI `py-spy`) to the one-worker bot for the
measured window and writes DIR/<backend><workers>-<scenario>.txt: on-CPU samples (idle pool threads left
out), the functions holding the most (own and total), then the collapsed stacks: a change is weighed by what
it removed. Several workers need Redis, so they run on PostgreSQL + Redis only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

THIS = Path(__file__).resolve()
REPO = THIS.parent.parent
sys.path.insert(0, str(REPO))

from bench.gateway import TOKEN, _pct, free_port, pin, server, summarise, wait_healthy, wait_workers  # noqa: E402

TICKET = re.compile(r"诉求编号：(\d{8}-\d{4,})")
NEW_ANYWAY = re.compile(r"^(\d+)\. 仍然新建", re.M)
REPORT_TEXT = "{openid}第{n}次：楼道灯坏了，晚上看不见"
TARGETS = {"pg": (0.25, 100.0), "sqlite": (0.15, 200.0)}  # (× echo in msgs/s, p99 ms)
TARGET_REPORTS = 150.0  # reports/s on PostgreSQL + Redis
TARGET_SCALING = 1.7  # two workers against one
SCENARIOS = ("report", "triage", "booking")

LISTED = re.compile(r"^(\d+)\. (?:【[^】]*】)*(\d{8}-\d{4,}) ", re.M)  # a line of 待分流
TRIAGED = re.compile(r"^已分流 (\d{8}-\d{4,})：")
QUEUE = re.compile(r"^待分流 (\d+) 条")
TRIAGE_FLOW = ("回复序号开始分流", "1. A 立行立办", "暂未指派", "暂无待分流")
ALREADY_TRIAGED = "刚刚已被分流"
SEED_TICKET = "19990101-{:06d}"  # a day no real report is filed on: the seeded needs' tickets stand apart
BOOKING_GROUP, BOOKING_SEATS = 25, 10  # residents per community, bookable seats of its session
CODE = re.compile(r"签到码：?\s*([A-Z0-9]{6})")
CARD_STATUS = re.compile(r"^您：(已预约，签到码 ([A-Z0-9]{6})|候补第(\d+)位|尚未预约)$", re.M)
SEATS_LEFT = re.compile(r"名额：剩余 (\d+) / (\d+)")


@dataclass
class Result:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    unexpected: list[str] = field(default_factory=list)
    done: int = 0  # reports filed, needs triaged, bookings answered: what the scenario is for
    told: dict[str, str] = field(default_factory=dict)  # ticket → the openid it was told to (report flow)
    told_twice: int = 0  # the same ticket named in two submit replies
    told_all: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # triage, warm-up too
    refused: int = 0  # triage: a need the other staff member triaged first
    contradictions: list[str] = field(default_factory=list)  # booking: a reply the resident's own history denies
    final: dict[str, str] = field(default_factory=dict)  # openid → its reply to the after-run question
    most_booked: dict[int, int] = field(default_factory=dict)  # booking: session → most confirmed seats seen
    idle_seats: list[int] = field(default_factory=lambda: [0, 0])  # booking: samples with a seat free while
    # someone waited, of all samples
    readback: str = ""
    cpu: tuple[float, float, float] = (0.0, 0.0, 0.0)  # CPU seconds in the window: bot, PostgreSQL + Redis, client
    replies: Counter = field(default_factory=Counter)  # the first line of each reply, to see where time goes
    by_step: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # latencies by message

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def cpu_per_message(self, which: int) -> float:
        """Milliseconds of CPU per answered message: 0 the bot, 1 PostgreSQL + Redis, 2 this load generator."""
        return 1000 * self.cpu[which] / len(self.latencies) if self.latencies else 0.0

    @property
    def done_rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


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


class ReportFlow:
    """反映 → 1 → 跳过 → 1 → 进度; every non-failure reply is expected (the flow restarts on anything else)."""

    name = "report"

    def __init__(self) -> None:
        self.counters: dict[str, list[int]] = defaultdict(lambda: [0])

    def next(self, openid: str, reply: str) -> str:
        return next_message(reply, openid, self.counters[openid])

    def seen(self, openid: str, reply: str, result: Result, measuring: bool) -> bool:
        for ticket in TICKET.findall(reply):
            if measuring:
                if ticket in result.told:
                    result.told_twice += 1
                else:
                    result.done += 1
                result.told[ticket] = openid
        return True


class TriageFlow:
    """待分流 → a listed number → 1 (A) or 3 (C) → 0 (不指派) → 待分流 …, as a staff member clears the queue."""

    name = "triage"

    def __init__(self) -> None:
        self.rng = random.Random(17)

    def next(self, openid: str, reply: str) -> str:
        if "回复序号开始分流" in reply and (listed := LISTED.findall(reply)):
            return self.rng.choice(listed)[0]
        if "1. A 立行立办" in reply:
            return self.rng.choice("13")
        if "指派给谁" in reply:
            return "0"
        return "待分流"

    def seen(self, openid: str, reply: str, result: Result, measuring: bool) -> bool:
        # The tier step answers 已分流 X with the 指派 question; 0 repeats 已分流 X with 暂未指派: one triage.
        if (told := TRIAGED.match(reply)) and "暂未指派" not in reply:
            result.told_all[told[1]].append(openid)
            result.done += measuring
            return True
        if ALREADY_TRIAGED in reply:
            result.refused += measuring
            return True
        return any(mark in reply for mark in TRIAGE_FLOW)


class BookingFlow:
    """议事 → 1 (预约座位) → 取消预约 → 1 (确定取消) → 议事 …; each resident's replies must agree with each other."""

    name = "booking"

    def __init__(self) -> None:
        self.holding: dict[str, bool] = {}  # openid → told it holds a seat or a waitlist place

    def next(self, openid: str, reply: str) -> str:
        if "1. 预约座位" in reply:
            return "1"
        if reply.startswith(("预约成功", "名额已满", "您已预约过", "您已在候补")):
            return "取消预约"
        if "确定取消您的议事" in reply:
            return "1"
        return "议事"

    def seen(self, openid: str, reply: str, result: Result, measuring: bool) -> bool:
        def contradiction(what: str) -> None:
            if len(result.contradictions) < 3:
                result.contradictions.append(f"{openid}: {what}")
            result.errors += 1  # counted whether measuring or not: it is a wrong answer, not a slow one

        if reply.startswith(("预约成功", "名额已满")):
            if self.holding.get(openid):
                contradiction(f"a new booking while holding one: {reply[:20]!r}")
            self.holding[openid] = True
            result.done += measuring
            return True
        if reply.startswith(("您已预约过", "您已在候补")):
            if self.holding.get(openid) is False:
                contradiction(f"{reply[:10]!r} after 已取消预约")
            self.holding[openid] = True
            return True
        if reply.startswith("已取消预约"):
            self.holding[openid] = False
            return True
        if reply.startswith("您目前没有议事预约"):
            if self.holding.get(openid):
                contradiction("没有议事预约 after a booking")
            self.holding[openid] = False
            return True
        return "【阳光17议】" in reply or "确定取消您的议事" in reply


FLOWS = {"report": ReportFlow, "triage": TriageFlow, "booking": BookingFlow}


def _step_name(text: str, asked: str) -> str:
    """A message as its step: 反映 … for any report; a number with the first words of what it answers."""
    if text.isdigit():
        return f"{text}({asked.split(chr(10), 1)[0][:6]})"
    return text.split(" ", 1)[0] + (" …" if " " in text else "")


def _processes() -> list[tuple[int, int, str, float]]:
    """(pid, parent, name, CPU seconds) of every process, from /proc (Linux); empty elsewhere."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    found = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = entry.read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        found.append((int(entry.parent.name), int(fields[1]), name, (int(fields[11]) + int(fields[12])) / ticks))
    return found


def cpu_seconds(root: int | None) -> tuple[float, float]:
    """CPU seconds used so far by `root` and its descendants (the bot), and by PostgreSQL and Redis."""
    processes = _processes()
    children = defaultdict(list)
    for pid, parent, _name, _cpu in processes:
        children[parent].append(pid)
    tree, todo = set(), [root] if root else []
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children[pid]
    bot_cpu = sum(cpu for pid, _p, _n, cpu in processes if pid in tree)
    services = sum(cpu for _pid, _p, name, cpu in processes if name.startswith(("postgres", "redis-server")))
    return bot_cpu, services


async def drive(url: str, openids: list[str], seconds: float, flow=None, warmup: float = 1.0,
                server_pid: int | None = None) -> Result:
    """Each openid is one sender with one message in flight, for `seconds` after a warm-up; no flow: the echo.
    With `server_pid`, the CPU that process (and its workers) and the database services used in the window."""
    import aiohttp

    from bot.config import Settings
    from bot.simulator import Phone, message_xml
    from handlers.framework import BUSY_REPLY, ERROR_REPLY, SAVED_BUT_REPLY, UNSURE_REPLY

    failures = {BUSY_REPLY, ERROR_REPLY, SAVED_BUT_REPLY, UNSURE_REPLY, ""}
    result = Result(flow.name if flow else "echo")
    measuring = False
    msg_ids = iter(range(10**15 + int(time.time() * 1000) % 10**9 * 1000, 10**18))
    connector = aiohttp.TCPConnector(limit=len(openids))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        phone = Phone(url, Settings(wechat_token=TOKEN), session)

        # Each sender's place in its flow carries over from the warm-up into the measured window.
        where: dict[str, str] = {}

        async def sender(openid: str, until_ref: list[float]) -> None:
            text = where.get(openid) or ("你好" if flow is None else flow.next(openid, ""))
            asked = ""
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
                if flow is None:
                    ok = ok and reply == "收到：你好"
                elif ok:
                    ok = flow.seen(openid, reply, result, measuring)
                if measuring:
                    result.replies[re.sub(r"\d+", "N", reply.split("\n", 1)[0][:24])] += 1
                    if ok:
                        result.latencies.append(elapsed)
                        result.by_step[_step_name(text, asked)].append(elapsed)
                    else:
                        result.errors += 1
                        if len(result.unexpected) < 3:
                            result.unexpected.append(f"{text!r} → HTTP {answer.status} {reply[:50]!r}")
                if flow is not None:
                    text = flow.next(openid, reply)
                asked = reply
            where[openid] = text

        until = [time.monotonic() + warmup]
        await asyncio.gather(*(sender(o, until) for o in openids))
        # Tickets told during the warm-up are not counted: the read-back below only counts rows of this window
        # by ticket, so it matches what was measured.
        measuring = True
        cpu_before, client_before = cpu_seconds(server_pid), time.process_time()
        started = time.monotonic()
        until[0] = started + seconds
        await asyncio.gather(*(sender(o, until) for o in openids))
        result.seconds = time.monotonic() - started
        cpu_after, client_after = cpu_seconds(server_pid), time.process_time()
        result.cpu = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1], client_after - client_before)
    return result


async def converse(url: str, openids: list[str], texts: list[str]) -> dict[str, str]:
    """Each openid sends `texts` in turn once the load is over; the last reply of each."""
    import aiohttp

    from bot.config import Settings
    from bot.simulator import Phone, message_xml

    last: dict[str, str] = {}
    msg_ids = iter(range(2 * 10**15 + int(time.time() * 1000) % 10**9 * 1000, 10**18))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        phone = Phone(url, Settings(wechat_token=TOKEN), session)

        async def one(openid: str) -> None:
            for text in texts:
                answer = await phone.post_xml(message_xml(openid, "text", {"Content": text, "MsgId": next(msg_ids)}))
                last[openid] = answer.text or ""

        await asyncio.gather(*(one(o) for o in openids))
    return last


async def watch_seats(db_url: str, stop: asyncio.Event, most: dict[int, int], idle: list[int]) -> None:
    """Each session's confirmed seats and waitlist, sampled until `stop` (one statement: one snapshot): a moment
    above the seats, or with a free seat while someone waits (a promotion missed), would show here."""
    from sqlalchemy import func
    from sqlmodel import select

    from storage.consultation_tables import Booking, BookingStatus, ConsultationSession
    from storage.db import Database

    db = Database(async_url(db_url))
    try:
        async with db.read() as s:
            seats = {x.id: x.seats for x in (await s.exec(select(ConsultationSession))).all()}
        while not stop.is_set():
            async with db.read() as s:
                rows = (await s.exec(select(Booking.session_id, Booking.status, func.count())
                                     .where(Booking.status != BookingStatus.CANCELLED)
                                     .group_by(Booking.session_id, Booking.status))).all()
            counts = Counter({(sid, status): n for sid, status, n in rows})
            for sid, n in seats.items():
                booked = counts[sid, BookingStatus.BOOKED]
                most[sid] = max(most.get(sid, 0), booked)
                idle[0] += booked < n and counts[sid, BookingStatus.WAITLISTED] > 0
            idle[1] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        await db.dispose()


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


async def seed(db_url: str, openids: list[str], neighbours: int = 1) -> None:
    """`neighbours` residents to a community (with one grid and one building). The 附议 offer compares a report
    with the open needs of its community: with one resident each the search runs and finds nothing (their own
    are left out); with several, as in a busy community, it reads up to 20 open needs like theirs at every
    report and offers them, and the flow answers 仍然新建 (one more message a report)."""
    from storage.db import Database
    from tests.factories import make_district, make_resident

    db = Database(async_url(db_url))
    d = await make_district(db)
    street = d.streets["S1"]
    building = None
    for i, openid in enumerate(openids):
        if i % neighbours == 0:
            building = await _place(db, street.id, i // neighbours)
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


async def _place(db, street_id: int, i: int):
    """Community, grid and building number `i` of the bench."""
    from storage.org import Building, Community, Grid

    async with db.write() as s:
        community = Community(code=f"BC{i:03d}", name=f"压测社区{i}", street_id=street_id)
        s.add(community)
        await s.flush()
        grid = Grid(code=f"BG{i:03d}", name=f"压测网格{i}", community_id=community.id)
        s.add(grid)
        await s.flush()
        building = Building(code=f"BB{i:03d}", name=f"{i + 10}号楼", grid_id=grid.id, community_id=community.id)
        s.add(building)
    return building


async def seed_triage(db_url: str, staff: list[str], per_staff: int) -> None:
    """Two staff per community (their grants as `steward grant` writes them); each community's queue holds
    2 × `per_staff` untriaged needs, bulk-inserted as bench/stats.py does, each raised by the community's one
    resident (a follower, told of the triage through the outbox) with its 提交 event, as a report leaves them."""
    from sqlalchemy import text

    from bench.stats import analyze, insert_rows
    from storage.db import Database
    from storage.roles import Role
    from storage.taxonomy import load_taxonomy
    from tests.factories import grant, make_district, make_resident

    db = Database(async_url(db_url))
    street = (await make_district(db)).streets["S1"]
    item = load_taxonomy().item("JZ-01")
    now = dt.datetime.now(dt.UTC)
    rng = random.Random(5)
    n = 0
    for c in range(len(staff) // 2):
        building = await _place(db, street.id, c)
        reporter = await make_resident(db, f"o_flow_reporter_{c:03d}", building, room="101", name=f"居民{c}",
                                       phone=f"1390000{c:04d}")
        for k in (0, 1):
            member = await make_resident(db, staff[2 * c + k], building, room=f"20{k}", name=f"工作人员{c}-{k}",
                                         phone=f"1370000{2 * c + k:04d}")
            await grant(db, member, Role.COMMUNITY_STAFF, building.community_id)
        rows = []
        for _ in range(2 * per_staff):
            n += 1
            created = now - dt.timedelta(minutes=rng.randrange(10, 48 * 60))
            rows.append({
                "ticket": SEED_TICKET.format(n), "status": "reported", "text": f"压测诉求{n}：小区路灯不亮，晚上看不见",
                "item_code": item.code, "category": item.category, "tier": item.default_tier.value,
                "reporter_id": reporter.id, "contact_name": reporter.name, "contact_phone": reporter.phone,
                "community_id": building.community_id, "grid_id": building.grid_id, "building_id": building.id,
                "room": reporter.room, "supporters": 1, "ratings_given": 0, "rework_count": 0,
                "created_at": created, "updated_at": created, "respond_by": created + dt.timedelta(hours=24),
                "first_respond_by": created + dt.timedelta(hours=24),
            })
        await insert_rows(db, rows)
    async with db.engine.begin() as conn:
        await conn.execute(text("INSERT INTO need_follower (need_id, resident_id, role, created_at) "
                                "SELECT id, reporter_id, 'reporter', created_at FROM need"))
        await conn.execute(text("INSERT INTO need_event (need_id, at, kind, actor_id, actor_label, from_status, "
                                "to_status, public, note, detail) SELECT id, created_at, 'reported', reporter_id, "
                                "'居民', NULL, 'reported', true, '', '{}' FROM need"))
    await analyze(db)
    await db.dispose()


async def read_back_triage(db_url: str, result: Result, staff: list[str]) -> str:
    """Every 分流定级 event against what staff were told, warm-up included (the events carry no window)."""
    from sqlalchemy import func
    from sqlmodel import col, select

    from storage.db import Database
    from storage.needs import Need, NeedEvent, NeedStatus
    from storage.residents import Resident

    db = Database(async_url(db_url))
    async with db.read() as s:
        events = (await s.exec(
            select(Need.ticket, Resident.openid)
            .select_from(NeedEvent)
            .join(Need, Need.id == NeedEvent.need_id)
            .join(Resident, Resident.id == NeedEvent.actor_id)
            .where(NeedEvent.kind == "triaged")
        )).all()
        triaged = (await s.exec(select(func.count()).select_from(Need)
                                .where(col(Need.triaged_at).is_not(None)))).one()
        waiting = dict((await s.exec(
            select(Resident.openid, func.count(col(Need.id)))
            .join(Need, Need.community_id == Resident.community_id)
            .where(col(Resident.openid).in_(staff[::2]),
                   col(Need.status).in_([NeedStatus.REPORTED.value, NeedStatus.REOPENED.value]))
            .group_by(Resident.openid)
        )).all())
    await db.dispose()
    by_need: dict[str, list[str]] = defaultdict(list)
    for ticket, openid in events:
        by_need[ticket].append(openid)
    told = result.told_all
    twice = sum(1 for who in by_need.values() if len(who) > 1)
    two_staff = sum(1 for who in by_need.values() if len(set(who)) > 1)
    told_two = sum(1 for who in told.values() if len(who) > 1)
    lost = sum(1 for t in told if t not in by_need)
    untold = sum(1 for t in by_need if t not in told)
    told_per = Counter(o for who in told.values() for o in who)
    done_per = Counter(o for who in by_need.values() for o in who)
    staff_off = sum(1 for o in staff if told_per[o] != done_per[o])
    counts_ok = 0
    for openid in staff[::2]:
        queue = QUEUE.match(result.final.get(openid, ""))
        shown = int(queue[1]) if queue else (0 if "暂无待分流" in result.final.get(openid, "") else -1)
        counts_ok += shown == waiting.get(openid, 0)
    return (f"{sum(len(w) for w in told.values())} told 已分流 (warm-up too), {len(events)} 分流定级 events on "
            f"{len(by_need)} needs, {triaged} needs triaged; lost {lost}, done-untold {untold}, told to two staff "
            f"{told_two}, needs with two events {twice}, by two staff {two_staff}; staff whose 已分流 count ≠ "
            f"their events {staff_off}/{len(staff)}; 「待分流 N 条」 = rows in {counts_ok}/{len(staff) // 2} "
            f"communities; {result.refused} refused as 刚刚已被分流 (measured)")


async def seed_booking(db_url: str, openids: list[str]) -> None:
    """BOOKING_GROUP residents to a community; each community's next 阳光17议 session open for booking with
    BOOKING_SEATS seats (capacity minus the reserved), its reminders marked sent so no broadcast runs meanwhile."""
    from storage.clock import local
    from storage.consultation_tables import ConsultationSession
    from storage.db import Database
    from tests.factories import make_district, make_resident

    db = Database(async_url(db_url))
    street = (await make_district(db)).streets["S1"]
    now = dt.datetime.now(dt.UTC)
    starts = now + dt.timedelta(days=5)
    for c in range(0, len(openids), BOOKING_GROUP):
        building = await _place(db, street.id, c // BOOKING_GROUP)
        async with db.write() as s:
            s.add(ConsultationSession(
                community_id=building.community_id, month=f"{local(starts):%Y-%m}", starts_at=starts,
                venue="社区党群服务中心会议室", capacity=BOOKING_SEATS + 5, reserved_seats=5,
                registration_opens_at=now - dt.timedelta(days=1), topic_cutoff_at=starts - dt.timedelta(days=2),
                opened_notice_at=now, remind_2d_at=now, remind_day_at=now, created_at=now, updated_at=now))
        for i, openid in enumerate(openids[c:c + BOOKING_GROUP], c):
            await make_resident(db, openid, building, room=f"{i + 1}01", phone=f"1380000{i:04d}")
    await db.dispose()


async def read_back_booking(db_url: str, result: Result, openids: list[str]) -> str:
    """The rows against the seats, and each resident's 「议事」 card after the run against their own row."""
    from sqlmodel import col, select

    from storage.consultation_tables import Booking, BookingStatus, ConsultationSession
    from storage.db import Database
    from storage.residents import Resident

    db = Database(async_url(db_url))
    async with db.read() as s:
        rows = (await s.exec(
            select(Resident.openid, Booking.session_id, Booking.status, Booking.code)
            .join(Resident, Resident.id == Booking.resident_id)
            .where(col(Resident.openid).in_(openids))
        )).all()
        seats = {x.id: x.seats for x in (await s.exec(select(ConsultationSession))).all()}
    await db.dispose()
    booked = Counter(sid for _, sid, status, _ in rows if status == BookingStatus.BOOKED)
    waiting = Counter(sid for _, sid, status, _ in rows if status == BookingStatus.WAITLISTED)
    idle_end = sum(1 for sid in seats if booked[sid] < seats[sid] and waiting[sid])
    over_end = sum(1 for sid, n in booked.items() if n > seats[sid])
    over_run = sum(1 for sid, n in result.most_booked.items() if n > seats[sid])
    most = max(result.most_booked.values(), default=0)
    pairs = Counter((openid, sid) for openid, sid, _, _ in rows)
    codes = Counter((sid, code) for _, sid, status, code in rows if status == BookingStatus.BOOKED)
    mine = {openid: (sid, status, code) for openid, sid, status, code in rows}
    agree = 0
    disagree: list[str] = []
    for openid in openids:
        card = result.final.get(openid, "")
        said = CARD_STATUS.search(card)
        sid, status, code = mine.get(openid, (None, BookingStatus.CANCELLED, None))
        if said is None:
            ok = False
        elif said[2]:
            ok = status == BookingStatus.BOOKED and code == said[2]
        elif said[3]:
            ok = status == BookingStatus.WAITLISTED
        else:
            ok = status == BookingStatus.CANCELLED
        left = SEATS_LEFT.search(card)
        ok = ok and left is not None and (sid is None or int(left[1]) == max(0, seats[sid] - booked[sid]))
        agree += ok
        if not ok and len(disagree) < 2:
            disagree.append(f"{openid}: row {status} {code}, card {card[-60:]!r}")
    line = (f"{len(seats)} sessions of {BOOKING_SEATS} seats: most confirmed seen during the run {most}, sessions "
            f"over their seats during the run {over_run}, at the end {over_end} (booked {sorted(booked.items())}, "
            f"waiting {sorted(waiting.items())}); a seat free while someone waited: {result.idle_seats[0]} of "
            f"{result.idle_seats[1]} samples, {idle_end} sessions at the end; a resident "
            f"with two rows {sum(1 for n in pairs.values() if n > 1)}, a code twice "
            f"{sum(1 for n in codes.values() if n > 1)}; contradicting replies {len(result.contradictions)}; "
            f"「议事」 card = row for {agree}/{len(openids)} residents")
    return "\n    ".join([line, *disagree, *result.contradictions])


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


async def fresh_database(backend: str, args: argparse.Namespace, tmp: str, tag: str) -> tuple[str, str | None]:
    if backend == "pg":
        await fresh_postgres(args.database_url)
        await clear_redis(args.redis_url, "steward-flow:")
        return args.database_url, args.redis_url
    return f"sqlite:///{tmp}/flow-{tag}.db", None


async def run_scenario(scenario: str, backend: str, workers: int, args: argparse.Namespace, tmp: str,
                       base_env: dict[str, str]) -> Result:
    """One scenario on a fresh database and a fresh server: seed, measure, ask after the run, read back."""
    tag = f"{backend}{workers}-{scenario}"
    prefix = {"report": "o_flow", "triage": "o_staff", "booking": "o_book"}[scenario]
    openids = [f"{prefix}_{tag}_{i:03d}" for i in range(args.residents)]
    db_url, redis_url = await fresh_database(backend, args, tmp, tag)
    env = steward_env(base_env, db_url, redis_url)
    subprocess.run([sys.executable, "-m", "bot.cli", "db", "upgrade"], env=env, cwd=tmp,  # noqa: ASYNC221
                   check=True, capture_output=True)
    if scenario == "triage":
        await seed_triage(db_url, openids, args.needs_per_staff)
    elif scenario == "booking":
        await seed_booking(db_url, openids)
    else:
        await seed(db_url, openids, args.neighbours)
    # Last month's reports written now, not by the scheduler's first run inside the measured window: in a
    # district they are written once on the 1st, not at every start.
    subprocess.run([sys.executable, "-m", "bot.cli", "report", "--make"], env=env, cwd=tmp,  # noqa: ASYNC221
                   check=True, capture_output=True)

    port = free_port()
    with bot(tag, workers, {**env, "STEWARD_PORT": str(port)}, tmp) as proc:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url, proc, timeout=60)
        await wait_workers(url, workers)
        spy = None
        if args.profile and workers == 1:
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(proc.pid), "-f", "raw",
                "-r", "200", "-d", str(int(args.seconds + 1.5)), "-o", str(Path(args.profile) / f"{tag}.raw"),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stop, most, idle = asyncio.Event(), {}, [0, 0]
        watcher = asyncio.create_task(watch_seats(db_url, stop, most, idle)) if scenario == "booking" else None
        result = await drive(url, openids, args.seconds, FLOWS[scenario](), server_pid=proc.pid)
        stop.set()
        if watcher is not None:
            await watcher
        result.most_booked, result.idle_seats = most, idle
        # Asked once the load is over, after 取消 leaves whatever step each one was at.
        if scenario == "triage":
            result.final = await converse(url, openids[::2], ["取消", "待分流"])
        elif scenario == "booking":
            result.final = await converse(url, openids, ["取消", "议事"])
        if spy is not None:
            await spy.wait()
            summarise(Path(args.profile) / f"{tag}.raw", Path(args.profile) / f"{tag}.txt")
    if scenario == "triage":
        result.readback = await read_back_triage(db_url, result, openids)
    elif scenario == "booking":
        result.readback = await read_back_booking(db_url, result, openids)
    else:
        result.readback = await read_back(db_url, result, openids)
    return result


async def run_backend(backend: str, args: argparse.Namespace, tmp: str) -> list[tuple[str, Result, list[Result]]]:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
    base_env["PYTHONPATH"] = str(REPO) + os.pathsep + base_env.get("PYTHONPATH", "")
    rows = []
    for workers in args.workers:
        if workers > 1 and backend == "sqlite":
            print("SQLite: several workers need Redis for the conversation state; not run", file=sys.stderr)
            continue
        port = free_port()
        with server([*pin(1), sys.executable, str(REPO / "bench" / "gateway.py"), "--baseline-server", "--port",
                     str(port)], base_env, tmp, Path(tmp, "echo.log")) as proc:
            url = f"http://127.0.0.1:{port}"
            await wait_healthy(url, proc)
            echo = await drive(url, [f"o_echo_{i}" for i in range(args.residents)], args.seconds,
                               server_pid=proc.pid)
        flows = [await run_scenario(scenario, backend, workers, args, tmp, base_env) for scenario in args.scenarios]
        rows.append((f"{'SQLite' if backend == 'sqlite' else 'PostgreSQL+Redis'}, {workers} worker"
                     f"{'s' if workers > 1 else ''}", echo, flows))
    return rows


def report(rows: list[tuple[str, Result, list[Result]]], residents: int) -> None:
    print(f"\n{residents} senders, one message in flight each, Python client on loopback; latency at the client.")
    print("done/s: reports filed (report), needs triaged (triage), bookings answered, seat or waitlist (booking).")
    print("bot CPU, db CPU: milliseconds of CPU per answered message in the bot's processes, and in PostgreSQL and")
    print("Redis (every such process on the machine), and in this client: the cost of a message whatever else shares")
    print("the cores (the client, PostgreSQL and Redis share one core: their sum near 1,000 ms/s is that core full).\n")
    head = (f"{'backend, workers':28} {'scenario':10} {'msgs/s':>8} {'done/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'errors':>6} {'vs echo':>8} {'bot CPU':>8} {'db CPU':>7} {'client CPU':>10}")
    print(head)
    print("-" * len(head))
    one_worker: dict[str, float] = {}
    verdicts = []
    for name, echo, flows in rows:
        for r in (echo, *flows):
            ratio = f"{r.rate / echo.rate:.2f}×" if r is not echo and echo.rate else "-"
            done = f"{r.done_rate:8.0f}" if r is not echo else f"{'-':>8}"
            print(f"{name:28} {r.name:10} {r.rate:8.0f} {done} {_pct(r.latencies, 0.5):8.1f} "
                  f"{_pct(r.latencies, 0.99):8.1f} {r.errors:6d} {ratio:>8} {r.cpu_per_message(0):8.2f} "
                  f"{r.cpu_per_message(1):7.2f} {r.cpu_per_message(2):10.2f}")
        flow = next((r for r in flows if r.name == "report"), None)
        if flow is None:
            continue
        backend = "sqlite" if name.startswith("SQLite") else "pg"
        ratio_target, p99_target = TARGETS[backend]
        ratio = flow.rate / echo.rate if echo.rate else 0.0
        p99 = _pct(flow.latencies, 0.99)
        ok = ratio >= ratio_target and p99 < p99_target and (backend != "pg" or flow.done_rate >= TARGET_REPORTS)
        line = f"{name}, report: {ratio:.2f}× echo, {flow.done_rate:.0f} reports/s, p99 {p99:.0f} ms"
        if "1 worker" in name:
            one_worker[backend] = ratio
        elif one_worker.get(backend):
            scale = ratio / one_worker[backend]
            line += f", {scale:.2f}× one worker (vs echo)"
            ok = ok and scale >= TARGET_SCALING
        verdicts.append(f"{line} → {'meets' if ok else 'MISSES'}")
    print("\nread back from the database:")
    for name, _echo, flows in rows:
        for flow in flows:
            print(f"  {name}, {flow.name}: {flow.readback}")
            print("    replies: " + ", ".join(f"{text!r} {n}" for text, n in flow.replies.most_common(8)))
            print("    by message, p50/p99 ms: " + ", ".join(
                f"{step} {_pct(times, 0.5):.0f}/{_pct(times, 0.99):.0f}"
                for step, times in sorted(flow.by_step.items(), key=lambda kv: -len(kv[1]))))
            for line in flow.unexpected:
                print(f"    e.g. {line}")
    if verdicts:
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
    parser.add_argument("--residents", type=int, default=50, help="senders: residents, or staff for triage")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--needs-per-staff", type=int, default=2000, help="triage: untriaged needs seeded per staff")
    parser.add_argument("--neighbours", type=int, default=1,
                        help="report: residents to a community (more than 1: the 附议 search finds and offers needs)")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/scale")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/3")
    parser.add_argument("--profile", help="a folder: py-spy samples of the one-worker bot during the measured run")
    args = parser.parse_args()
    args.scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    if args.residents % 2:
        parser.error("--residents: an even number (triage seats two staff per community)")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
