"""三率 benchmark: a district of N needs (bulk-inserted, spread over 12 months, 30 communities of 5 grids, every
status: answered late, reworked, merged, rejected, escalated, 督办, rated or not), then time what staff ask:

  district   三率 of the whole district over the 12 months, by community, with the two medians (target < 2 s)
  community  one community's month, by grid, with the medians (the chat's 「本月统计」; target < 200 ms)

each beside a baseline: the bare COUNT(*) over the same rows.

    python bench/stats.py                       # 1,000,000 needs, SQLite
    python bench/stats.py --needs 100000
    STEWARD_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench python bench/stats.py   # also PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text
from sqlmodel import col, func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import migrate
from storage.actor import Actor
from storage.db import Database
from storage.needs import Need
from storage.org import Community, Grid, Street
from storage.stats import month_period, percent, rates, trend_period
from storage.workdays import TZ

CHUNK = 20_000
COMMUNITIES = 30
GRIDS = 5
CATEGORIES = ("居住环境", "公共服务", "治安", "就业社保", "养老助残", "教育", "交通出行", "其他")
NOW = dt.datetime(2026, 12, 3, 10, 0, tzinfo=TZ)
STATUSES = ("reported", "triaged", "assigned", "in_progress", "resolved", "rated", "rated", "rated", "closed",
            "rejected", "merged", "reopened", "escalated", "supervised")
OPERATOR = Actor.operator("bench")


async def build_org(db: Database) -> list[tuple[int, list[int]]]:
    """COMMUNITIES communities of GRIDS grids each: [(community id, [grid ids])]."""
    org = []
    async with db.write() as s:
        street = Street(code="BS", name="基准街道")
        s.add(street)
        await s.flush()
        for c in range(COMMUNITIES):
            community = Community(code=f"BC{c:02d}", name=f"基准社区{c:02d}", street_id=street.id)
            s.add(community)
            await s.flush()
            grids = [Grid(code=f"BC{c:02d}G{g}", name=f"第{g + 1}网格", community_id=community.id)
                     for g in range(GRIDS)]
            s.add_all(grids)
            await s.flush()
            org.append((community.id, [g.id for g in grids]))
    return org


def need_row(i: int, rng: random.Random, org: list[tuple[int, list[int]]], start: dt.datetime) -> dict:
    community, grids = org[i % len(org)]
    created = start + dt.timedelta(seconds=rng.randrange(365 * 86400))
    status = STATUSES[rng.randrange(len(STATUSES))]
    answered = created + dt.timedelta(hours=rng.choice((1, 3, 20, 40)))
    respond_by = created + dt.timedelta(hours=24)
    resolve_by = created + dt.timedelta(days=9)
    resolved = created + dt.timedelta(days=rng.choice((1, 4, 8, 12)))
    done = status in ("resolved", "rated", "closed")
    rated = status == "rated" or (status == "supervised")
    return {
        "ticket": f"B{i:09d}", "status": status, "text": "基准诉求", "item_code": "JZ-01",
        "category": CATEGORIES[i % len(CATEGORIES)], "tier": "B", "community_id": community,
        "grid_id": grids[(i // len(org)) % len(grids)], "supporters": 1, "created_at": created, "updated_at": created,
        "respond_by": None if status in ("rejected", "merged") else respond_by,
        "first_respond_by": None if status == "reported" else respond_by,
        "first_responded_at": None if status == "reported" else answered,
        "responded_at": None if status == "reported" else answered,
        "resolve_by": None if status in ("rejected", "merged", "escalated", "supervised") else resolve_by,
        "resolved_at": resolved if done else None,
        "department_id": None,
        "rating": rng.choice(("满意", "基本满意", "不满意")) if rated else None,
        "ratings_given": (2 if status == "supervised" else 1) if rated else 0,
        "rework_count": 1 if status in ("reopened", "supervised") or i % 17 == 0 else 0,
        "district_reported_at": resolved if status == "supervised" else None,
    }


def _sqlite_cell(value):
    """What SQLAlchemy stores for a UTCDateTime on SQLite (UTC, this format), so the bulk path reads the same."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


async def insert_rows(db: Database, rows: list[dict], table: str = "need") -> None:
    """Bulk insert past the ORM: SQLite's executemany on the raw connection, PostgreSQL's COPY."""
    columns = list(rows[0])
    async with db.engine.begin() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        if db.is_sqlite:
            names, marks = ", ".join(columns), ", ".join("?" * len(columns))
            await driver.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})",
                                     [[_sqlite_cell(row[c]) for c in columns] for row in rows])
        else:
            await driver.copy_records_to_table(table, records=[[row[c] for c in columns] for row in rows],
                                               columns=columns)


async def fill(db: Database, count: int) -> list[tuple[int, list[int]]]:
    org = await build_org(db)
    rng = random.Random(7)
    start = trend_period(month_period("2026-12", NOW)).start
    for first in range(0, count, CHUNK):
        rows = [need_row(i, rng, org, start) for i in range(first, min(count, first + CHUNK))]
        await insert_rows(db, rows)
    await analyze(db)
    return org


async def analyze(db: Database) -> None:
    """Fresh planner statistics after a bulk insert, as a district's nightly maintenance would leave them."""
    if db.is_sqlite:
        async with db.engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
    else:
        async with db.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE need"))


async def best_of(runs: int, make):
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = await make()
        best = min(best, time.perf_counter() - started)
    return best, result


async def count_where(db: Database, *where) -> int:
    async with db.read() as s:
        return (await s.exec(select(func.count()).select_from(Need).where(*where))).one()


async def bench(db: Database, needs: int, label: str, reuse: bool = False) -> None:
    started = time.perf_counter()
    if reuse:
        async with db.read() as s:
            org = [(c.id, []) for c in (await s.exec(select(Community).order_by(Community.id))).all()]
    else:
        org = await fill(db, needs)
        where = f" into {db.url.split(':///', 1)[1]}" if db.is_sqlite else ""  # a server URL may hold a password
        print(f"[{label}] inserted {needs:,} needs in {time.perf_counter() - started:.1f} s{where}")
    year, month = trend_period(month_period("2026-12", NOW)), month_period("2026-11", NOW)
    community = org[0][0]

    base, n = await best_of(3, lambda: count_where(db, col(Need.created_at) >= year.start,
                                                   col(Need.created_at) < year.end))
    took, report = await best_of(3, lambda: rates(db, OPERATOR, NOW, period=year, by="community", medians=False))
    t = report.total
    print(f"[{label}] district 三率, 12 months by community ({n:,} needs): {took * 1000:,.0f} ms "
          f"(target < 2,000 ms; baseline COUNT(*) {base * 1000:,.0f} ms) — 响应率 {percent(t.response_rate)}, "
          f"办结率 {percent(t.resolution_rate)}, 满意率 {percent(t.satisfaction_rate)}")
    with_medians, report = await best_of(1, lambda: rates(db, OPERATOR, NOW, period=year, by="community"))
    print(f"[{label}]   the same with the two medians (`steward stats`): {with_medians * 1000:,.0f} ms — "
          f"{report.median_response_hours:.1f} h, {report.median_resolution_days:.1f} days")
    for by in ("grid", "category"):
        took, _report = await best_of(1, lambda by=by: rates(db, OPERATOR, NOW, period=month, by=by))
        print(f"[{label}]   the district's month by {by}, with medians: {took * 1000:,.0f} ms")

    base, n = await best_of(5, lambda: count_where(db, col(Need.community_id) == community,
                                                   col(Need.created_at) >= month.start,
                                                   col(Need.created_at) < month.end))
    took, report = await best_of(5, lambda: rates(db, OPERATOR, NOW, period=month, by="grid",
                                                  community_id=community))
    print(f"[{label}] one community's month by grid ({n:,} needs): {took * 1000:,.1f} ms "
          f"(target < 200 ms; baseline COUNT(*) {base * 1000:,.1f} ms) — {len(report.rows)} grids")


async def main(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="steward-bench-stats-")
    targets = [("SQLite", f"sqlite+aiosqlite:///{args.reuse or tmp + '/bench.db'}")]
    url = os.environ.get("STEWARD_BENCH_DATABASE_URL")
    if url:
        targets.append(("PostgreSQL", "postgresql+asyncpg://" + url.split("://", 1)[1]))
    for label, db_url in targets:
        db = Database(db_url)
        try:
            await migrate.upgrade(db)
            await bench(db, args.needs, label, reuse=bool(args.reuse) and label == "SQLite")
        finally:
            await db.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--needs", type=int, default=1_000_000)
    parser.add_argument("--reuse", metavar="FILE", help="time the SQLite file an earlier run filled (it prints it)")
    asyncio.run(main(parser.parse_args()))
