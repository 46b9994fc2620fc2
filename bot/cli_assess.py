"""`steward assess`: the district's yearly community assessment (storage/assess.py), and `steward report`: where
the monthly reports are (storage/reports.py).

  steward assess [--year 2026] [--file F] [--xlsx OUT] [--explain COMMUNITY]
  steward assess enter --community C --year 2026 --indicator A1.1 --value 12 [--file F]
  steward report [--month 2026-11] [--make]
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from bot.cli_common import cli_clock, cli_operator, cli_settings, database, find_community, run
from storage.assess import AssessError, assess, enter_value, explain, load_system, show, summary_text, write_xlsx
from storage.db import Database
from storage.reports import existing_reports, month_dir, previous_month, write_month
from storage.stats import StatsError, month_period
from storage.workdays import TZ


async def assess_command(db: Database, now: dt.datetime, args: argparse.Namespace, data_dir: Path) -> str:
    system = load_system(args.file, data_dir)
    year = args.year or now.astimezone(TZ).year
    if args.action == "enter":
        community = await find_community(db, args.community)
        row = await enter_value(db, cli_operator(), system, community_id=community.id, year=year,
                                indicator=args.indicator, value=args.value, now=now)
        item = system.item(row.indicator)
        return f"已录入：{community.name} {year}年 {item.id} {item.name} = {show(item, row.value)}（已记入审计）。"
    result = await assess(db, system, year, now)
    if args.explain:
        community = await find_community(db, args.explain)
        text = explain(result, community.id)
    else:
        text = summary_text(result)
    if args.xlsx:
        write_xlsx(result, args.xlsx)
        text += f"\n已写入 {args.xlsx}（排名和明细两张表）。"
    return text


async def report_command(db: Database, now: dt.datetime, args: argparse.Namespace, data_dir: Path) -> str:
    month = month_period(args.month, now) if args.month else previous_month(now)
    if args.make:
        await write_month(db, data_dir, month, now)
    files = existing_reports(data_dir, month)
    if not files:
        return (f"{month.label}的月度报告还没有生成（每月1日自动生成，放在 {month_dir(data_dir, month)}）；"
                "加 --make 可现在生成。")
    return "\n".join([f"{month.label}的月度报告："] + [str(p.resolve()) for p in files])


async def run_command(db: Database, now: dt.datetime, args: argparse.Namespace, data_dir: Path) -> str:
    """Run the parsed command against a database (the tests call this with theirs)."""
    try:
        if args.command == "report":
            return await report_command(db, now, args, data_dir)
        return await assess_command(db, now, args, data_dir)
    except (AssessError, StatsError) as exc:
        raise SystemExit(exc.reason) from None


def _run(args: argparse.Namespace) -> None:
    settings = cli_settings(args)

    async def go() -> str:
        async with database(settings) as db:
            return await run_command(db, cli_clock(settings).now(), args, settings.data_dir)

    run(go())


def register(subparsers) -> None:
    p = subparsers.add_parser("assess", help="社区治理评价：按指标体系给各社区打分排名 (yearly assessment)")
    p.add_argument("--year", type=int, help="年度，如 2026（默认今年）")
    p.add_argument("--file", help="指标体系文件（默认：数据目录的 indicators.toml，没有则用内置样例）")
    p.add_argument("--xlsx", metavar="OUT", help="把排名和明细写入 Excel 文件")
    p.add_argument("--explain", metavar="COMMUNITY", help="逐项说明一个社区的得分（社区代码或名称）")
    p.set_defaults(func=_run, action=None)
    actions = p.add_subparsers(dest="action")
    enter = actions.add_parser("enter", help="录入一个社区某年的录入类指标（记入审计）")
    enter.add_argument("--community", required=True, help="社区代码或名称")
    enter.add_argument("--year", type=int, required=True)
    enter.add_argument("--indicator", required=True, help="三级指标编号，如 A1.1")
    enter.add_argument("--value", type=float, required=True)
    enter.add_argument("--file", help="指标体系文件")
    enter.set_defaults(func=_run, action="enter")

    r = subparsers.add_parser("report", help="月度报告：列出某月报告文件的位置 (monthly report files)")
    r.add_argument("--month", help="月份，如 2026-11（默认上个月）")
    r.add_argument("--make", action="store_true", help="现在生成（重写）该月全部报告，不发通知")
    r.set_defaults(func=_run)
