"""`steward stats`: 三率 (response, resolution, satisfaction) outside chat, as text, JSON, CSV or an Excel file.

  steward stats [--community C1] [--month 2026-11] [--by community|grid|category|month]
                [--json | --csv | --xlsx FILE]

`--by month` shows the twelve months ending with `--month`. The definitions are storage/stats.py's (and the
README's "三率").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

import openpyxl

from bot.cli_common import cli_operator, find_community, run_with_db
from storage.db import Database
from storage.exports import csv_text, safe_cell
from storage.stats import (
    GROUPINGS,
    Rates,
    Report,
    StatsError,
    as_dict,
    month_period,
    percent,
    rates,
    table,
    trend_period,
)


def _line(r: Rates) -> str:
    return (f"{r.label}：诉求{r.reported}件｜响应率{percent(r.response_rate)}（{r.responded_on_time}/{r.response_due}）"
            f"｜办结率{percent(r.resolution_rate)}（{r.resolved_on_time}/{r.resolution_due}）"
            f"｜满意率{percent(r.satisfaction_rate)}（{r.satisfied}/{r.rated}，未评价{r.unrated}）"
            f"｜超期{r.overdue}｜督办{r.supervised}｜重办{r.reworked}｜上报区级{r.escalated}"
            f"｜驳回{r.rejected}｜合并{r.merged}")


def _median(value: float | None, unit: str) -> str:
    return "—" if value is None else f"{value:.1f}{unit}"


def text(report: Report) -> str:
    lines = [f"三率统计：{report.scope}，{report.period.label}报来的诉求（按{GROUPINGS[report.by]}）"]
    lines += [_line(r) for r in report.rows] or ["（这段时间没有诉求）"]
    if len(report.rows) > 1:
        lines.append(_line(report.total))
    lines.append(f"首次响应用时中位数：{_median(report.median_response_hours, '小时')}；"
                 f"办结用时中位数：{_median(report.median_resolution_days, '天')}")
    return "\n".join(lines)


def write_xlsx(report: Report, path: str) -> None:
    """One sheet: the columns of the CSV, the rates as percentages Excel/WPS can sort and chart."""
    header, rows = table(report, fractions=True)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "三率"
    sheet.append([f"{report.scope} {report.period.label}"])
    sheet.append(header)
    for row in rows:
        # Labels come from names staff typed: defused like the CSV's, so a sheet never holds a formula.
        sheet.append([safe_cell(cell) for cell in row])
    rate_columns = [i + 1 for i, name in enumerate(header) if name.endswith("率")]
    for line in sheet.iter_rows(min_row=3):
        for index in rate_columns:
            line[index - 1].number_format = "0.0%"
    book.save(path)


async def stats_command(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    community = await find_community(db, args.community) if args.community else None
    month = month_period(args.month, now)
    by = args.by or ("grid" if community else "community")
    period = trend_period(month) if by == "month" else month
    report = await rates(db, cli_operator(), now, period=period, by=by,
                         community_id=community.id if community else None)
    if args.json:
        return json.dumps(as_dict(report), ensure_ascii=False, indent=2)
    if args.csv:
        header, rows = table(report)
        return csv_text(rows, header).rstrip("\n")  # print() ends the last line
    if args.xlsx:
        write_xlsx(report, args.xlsx)
        return f"已写入 {args.xlsx}（{len(report.rows)}行，另有合计）。"
    return text(report)


async def run_command(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    """Run the parsed command against a database (the tests call this with theirs)."""
    try:
        return await stats_command(db, now, args)
    except StatsError as exc:
        raise SystemExit(exc.reason) from None


def _run(args: argparse.Namespace) -> None:
    run_with_db(args, run_command)


def register(subparsers) -> None:
    p = subparsers.add_parser("stats", help="三率统计：响应率、办结率、满意率 (response, resolution, satisfaction)")
    p.add_argument("--community", help="社区代码或名称（默认全区）")
    p.add_argument("--month", help="月份，如 2026-11（默认本月）")
    p.add_argument("--by", choices=list(GROUPINGS),
                   help="按社区、网格、大类或月份分组（默认：全区按社区，单个社区按网格；month 为截至该月的12个月）")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument("--csv", action="store_true", help="UTF-8 BOM CSV (Excel/WPS)")
    out.add_argument("--xlsx", metavar="FILE", help="写入 Excel 文件")
    p.set_defaults(func=_run)
