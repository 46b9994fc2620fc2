"""The monthly report: one Excel file per community and one for the district, for the month just ended.

Each file has a one-page 概要 (the month's 三率 and counts beside the month before's) and the 三率 tables (by grid
for a community, by community for the district; by 大类 for both), with storage/stats.py's definitions.
Files go to `<data dir>/reports/<YYYY-MM>/` as `<community code>.xlsx` and `district.xlsx`.

The scheduler's job (`monthly_reports`) writes last month's missing files, a bounded number per run, and queues
a notice to each community's staff (and the district file to the admins) saying where to get it; the notice's
key makes a repeat a no-op, so a run that died half-way is finished by the next. The district file is written
last: once it is there the month is done and a run costs one file check. It runs from the 1st on (a scheduler
that was down on the 1st catches up on its next run).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import secrets
from pathlib import Path

import openpyxl
from openpyxl.styles import Font
from sqlmodel import col, select

from storage.actor import Actor
from storage.db import Database
from storage.exports import safe_cell
from storage.org import Community
from storage.outbox import NoticeKind, enqueue
from storage.policy import Can, allows
from storage.roles import Role, RoleGrant, audit_entry, staff_resident_ids
from storage.stats import Period, Rates, Report, month_period, percent, rates, table
from storage.workdays import TZ

REPORTS_DIR = "reports"
DISTRICT_FILE = "district.xlsx"
FILES_PER_RUN = 40  # a district has dozens of communities: two or three runs at most


def previous_month(now: dt.datetime) -> Period:
    first = now.astimezone(TZ).replace(day=1)
    last = first - dt.timedelta(days=1)
    return month_period(f"{last.year}-{last.month:02d}", now)


def month_dir(data_dir: Path, month: Period) -> Path:
    return Path(data_dir) / REPORTS_DIR / month.key


def _file_name(code: str) -> str:
    return re.sub(r"[^\w.-]", "_", code) + ".xlsx"  # a code is staff-typed: never a path


def report_path(data_dir: Path, month: Period, community: Community | None) -> Path:
    return month_dir(data_dir, month) / (DISTRICT_FILE if community is None else _file_name(community.code))


def existing_reports(data_dir: Path, month: Period) -> list[Path]:
    """The month's files, the district's first."""
    folder = month_dir(data_dir, month)
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.glob("*.xlsx") if p.name != DISTRICT_FILE)
    district = folder / DISTRICT_FILE
    return ([district] if district.exists() else []) + files


async def report_files(db: Database, data_dir: Path, months: list[Period],
                       communities: set[int] | None) -> list[tuple[Period, list[tuple[Path, str]]]]:
    """Each month's files for someone who runs `communities` (None: the whole district, its own file included),
    each with whose it is. Only names this module writes are offered: a stray file in the folder, or a name typed
    into a URL, is never one of them."""
    if communities is not None and not communities:
        return [(month, []) for month in months]
    query = select(Community).order_by(Community.code)
    if communities is not None:
        query = query.where(col(Community.id).in_(sorted(communities)))
    async with db.read() as s:
        rows = (await s.exec(query)).all()
    found = []
    for month in months:
        named = {DISTRICT_FILE: "全区"} if communities is None else {}
        named.update({report_path(data_dir, month, c).name: c.name for c in rows})
        found.append((month, [(path, named[path.name]) for path in existing_reports(data_dir, month)
                              if path.name in named]))
    return found


# ---------------------------------------------------------------------------------------------- the workbook


def _summary_rows(now_: Report, before: Report) -> list[list]:
    a, b = now_.total, before.total

    def rate(r: Rates, name: str) -> str:
        part, whole = {"响应率": (r.responded_on_time, r.response_due),
                       "办结率": (r.resolved_on_time, r.resolution_due),
                       "满意率": (r.satisfied, r.rated)}[name]
        value = {"响应率": r.response_rate, "办结率": r.resolution_rate, "满意率": r.satisfaction_rate}[name]
        return f"{percent(value)}（{part}/{whole}）"

    def hours(v: float | None, unit: str) -> str:
        return "—" if v is None else f"{v:.1f}{unit}"

    return [
        ["诉求量", a.reported, b.reported],
        *([name, rate(a, name), rate(b, name)] for name in ("响应率", "办结率", "满意率")),
        ["未评价", a.unrated, b.unrated],
        ["在办", a.open, b.open],
        ["超期", a.overdue, b.overdue],
        ["督办", a.supervised, b.supervised],
        ["重办", a.reworked, b.reworked],
        ["上报区级", a.escalated, b.escalated],
        ["首次响应用时中位数", hours(now_.median_response_hours, "小时"), hours(before.median_response_hours, "小时")],
        ["办结用时中位数", hours(now_.median_resolution_days, "天"), hours(before.median_resolution_days, "天")],
    ]


def _table_sheet(book, title: str, report: Report) -> None:
    sheet = book.create_sheet(title)
    header, rows = table(report, fractions=True)
    sheet.append([f"{report.scope} {report.period.label}"])
    sheet.append(header)
    for row in rows:
        sheet.append([safe_cell(cell) for cell in row])  # labels are names staff typed: never a formula
    rate_columns = [i for i, name in enumerate(header) if name.endswith("率")]
    for line in sheet.iter_rows(min_row=3):
        for index in rate_columns:
            line[index].number_format = "0.0%"


async def _figures(db: Database, month: Period, now: dt.datetime, community: Community | None) -> tuple[Report, ...]:
    actor, cid = Actor.system(), (community.id if community else None)
    this = await rates(db, actor, now, period=month, by="grid" if community else "community", community_id=cid)
    before = await rates(db, actor, now, period=previous_month(month.start), community_id=cid)
    by_category = await rates(db, actor, now, period=month, by="category", community_id=cid, medians=False)
    return this, before, by_category


def _workbook(figures: tuple[Report, ...], month: Period, now: dt.datetime, by_grid: bool) -> openpyxl.Workbook:
    this, before, by_category = figures
    book = openpyxl.Workbook()
    summary = book.active
    summary.title = "概要"
    summary.append([f"{this.scope} {month.label} 月度报告"])
    summary["A1"].font = Font(bold=True, size=14)
    summary.append([f"生成于 {now.astimezone(TZ):%Y-%m-%d %H:%M}；统计{month.label}报来的诉求，口径见「三率」说明。"])
    summary.append([])
    summary.append(["指标", month.label, before.period.label])
    for row in _summary_rows(this, before):
        summary.append(row)
    summary.append([])
    summary.append(["三率明细见「三率」（按" + ("网格" if by_grid else "社区") + "）和「大类」两张表。"])
    summary.column_dimensions["A"].width = 20
    summary.column_dimensions["B"].width = 22
    summary.column_dimensions["C"].width = 22
    # One page when printed: the summary is what a leader reads.
    summary.sheet_properties.pageSetUpPr.fitToPage = True
    summary.page_setup.fitToWidth = 1
    summary.page_setup.fitToHeight = 1
    _table_sheet(book, "三率", this)
    _table_sheet(book, "大类", by_category)
    return book


async def build_report(db: Database, month: Period, now: dt.datetime, community: Community | None) -> openpyxl.Workbook:
    """The workbook of one community (or the district, None) for `month`: 概要, 三率, 大类."""
    return _workbook(await _figures(db, month, now, community), month, now, community is not None)


def _save(figures: tuple[Report, ...], month: Period, now: dt.datetime, by_grid: bool, path: Path) -> None:
    partial = path.with_suffix(f".xlsx.{secrets.token_hex(4)}.part")  # two writers never share one
    _workbook(figures, month, now, by_grid).save(partial)
    os.replace(partial, path)  # a reader (or the next run) never sees half a file


async def write_report(db: Database, data_dir: Path, month: Period, now: dt.datetime,
                       community: Community | None) -> Path:
    path = report_path(data_dir, month, community)
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = await _figures(db, month, now, community)
    # Building and saving a workbook is tens of milliseconds of CPU: in a thread, so the residents' messages
    # the same event loop answers are not held up by the scheduler's monthly run.
    await asyncio.to_thread(_save, figures, month, now, community is not None, path)
    return path


async def write_month(db: Database, data_dir: Path, month: Period, now: dt.datetime) -> list[Path]:
    """Every community's file and the district's for `month`, written (again) now; no notices (`steward report
    --make`)."""
    async with db.read() as s:
        communities = list((await s.exec(select(Community).order_by(Community.code))).all())
    paths = [await write_report(db, data_dir, month, now, c) for c in communities]
    return [await write_report(db, data_dir, month, now, None), *paths]


class ReportError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


MAKE_MONTHS = 2  # this month so far, and last month: older months' figures are settled, their files stand


async def make_reports(db: Database, data_dir: Path, month: Period, actor: Actor, now: dt.datetime) -> list[Path]:
    """生成报告 on demand (the console's button, `steward report --make`): the files of `month` the person runs,
    written again now, no notices. Whoever assesses the district (district staff, admins, the CLI's operator) makes
    every community's file and the district's; community staff their own communities'. Audited."""
    current = month_period(None, now)
    if month.start > current.start or month.start < previous_month(current.start).start:
        raise ReportError("只能生成本月（截至现在）或上个月的报告。")
    if allows(actor, Can.ENTER_INDICATORS):
        paths = await write_month(db, data_dir, month, now)
    else:
        ids = sorted(actor.ids(Role.COMMUNITY_STAFF))
        if not ids:
            raise ReportError("月度报告只对社区工作人员、区级工作人员和管理员开放。")
        async with db.read() as s:
            communities = (await s.exec(select(Community).where(col(Community.id).in_(ids))
                                        .order_by(Community.code))).all()
        paths = [await write_report(db, data_dir, month, now, c) for c in communities]
    async with db.write() as s:
        s.add(audit_entry(now, actor.name, "report.make", "report", month.key, files=[p.name for p in paths]))
    return paths


# ---------------------------------------------------------------------------------------------- the job


def notice_text(scope: str, month: Period) -> str:
    return (f"【月度报告】{scope}{month.label}的月度报告已生成（概要和三率统计表，Excel）。\n"
            "请在管理后台「统计 › 月度报告」下载。")


async def _notify(db: Database, month: Period, now: dt.datetime, community: Community | None) -> int:
    async with db.write() as s:
        if community is not None:
            people, scope, tag = await staff_resident_ids(s, community.id), community.name, community.code
        else:
            people = sorted(set((await s.exec(select(RoleGrant.resident_id).where(
                RoleGrant.role == Role.ADMIN.value, col(RoleGrant.revoked_at).is_(None)))).all()))
            scope, tag = "全区", "district"
        return await enqueue(s, NoticeKind.MONTHLY_REPORT, notice_text(scope, month),
                             [(rid, f"monthly_report:{month.key}:{tag}:{rid}") for rid in people], now)


async def monthly_reports(db: Database, data_dir: Path, now: dt.datetime, *, limit: int = FILES_PER_RUN) -> int:
    """Last month's missing files (at most `limit` a run) and their notices; how many files were written."""
    month = previous_month(now)
    if report_path(data_dir, month, None).exists():
        return 0
    async with db.read() as s:
        communities = list((await s.exec(select(Community).order_by(Community.code))).all())
    written = 0
    for community in communities:
        if not report_path(data_dir, month, community).exists():
            if written >= limit:
                return written  # the next run goes on; the district file waits for every community's
            await write_report(db, data_dir, month, now, community)
            written += 1
        await _notify(db, month, now, community)
    await write_report(db, data_dir, month, now, None)
    await _notify(db, month, now, None)
    return written + 1
