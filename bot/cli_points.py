"""`steward points audit|catalogue|policy` and `steward activity list|publish`: the time bank from the command line."""

from __future__ import annotations

import argparse
import datetime as dt
import math
from dataclasses import fields

from bot.cli_common import cli_clock, cli_operator, cli_settings, database, find_community, run
from bot.cli_consultation import parse_local_time
from bot.config import Settings, env_name
from storage import activities as act
from storage import points as pts
from storage import rewards as rw
from storage.db import Database


async def audit(settings: Settings, out=print) -> int:
    """Prints every account whose balance differs from its ledger; exit status 1 when there is one."""
    async with database(settings) as db:
        found = await pts.audit_points(db)
        total = await pts.count_accounts(db)
    if not found:
        out(f"积分核对通过：{total} 个账户的余额都等于流水合计。")
        return 0
    out(f"发现 {len(found)} 个账户不一致：")
    for f in found:
        holder = f"居民#{f.resident_id}" if f.resident_id is not None else f"社区基金#{f.fund_community_id}"
        out(f"  账户#{f.account_id} {holder}：余额 {f.balance}，流水合计 {f.ledger_sum}；"
            f"时长 {f.served_half_hours}/2 h，流水 {f.ledger_half_hours}/2 h")
    return 1


async def catalogue_add(settings: Settings, args: argparse.Namespace, out=print) -> None:
    async with database(settings) as db:
        community = await find_community(db, args.community)
        reward = await rw.add_reward(
            db, cli_operator(), community.id, args.name, args.price, args.stock, cli_clock(settings).now(),
            kind=args.kind, description=args.description or "",
        )
    out(f"已上架 #{reward.id}「{reward.name}」{reward.price} 分，库存 {reward.stock}（{community.name}）。")


async def catalogue_list(settings: Settings, args: argparse.Namespace, out=print) -> None:
    async with database(settings) as db:
        community = await find_community(db, args.community)
        items = await rw.catalogue(db, community.id)
    if not items:
        out(f"{community.name}还没有兑换项目。")
    for r in items:
        out(f"#{r.id} [{rw.KIND_LABELS[r.kind]}] {r.name} {r.price} 分，剩 {r.stock}")


async def catalogue_restock(settings: Settings, args: argparse.Namespace, out=print) -> None:
    async with database(settings) as db:
        reward = await rw.restock(db, cli_operator(), args.reward, args.add, cli_clock(settings).now())
    out(f"#{reward.id}「{reward.name}」现有库存 {reward.stock}。")


async def activity_list(settings: Settings, args: argparse.Namespace, out=print) -> None:
    async with database(settings) as db:
        community = await find_community(db, args.community)
        items = await act.upcoming(db, community.id, None, cli_clock(settings).now(), limit=50)
    if not items:
        out(f"{community.name}近期没有志愿活动。")
    for i in items:
        a = i.activity
        out(f"#{a.id} {act.when_text(a)} {a.title} @{a.place} 报名 {i.signed}/{a.capacity} "
            f"签到码 {a.checkin_code} 签退码 {a.checkout_code}")


def half_hours_of(text: str, flag: str) -> int:
    """"2" or "1.5" hours as half-hour steps; SystemExit with a sentence for anything else."""
    try:
        steps = float(text) * 2
    except (TypeError, ValueError):
        steps = -1.0
    if not math.isfinite(steps) or steps < 1 or steps != int(steps):
        raise SystemExit(f"{flag} 填小时数，按半小时计，例如 2 或 1.5（现在是「{text}」）。")
    return int(steps)


async def activity_publish(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    community = await find_community(db, args.community)
    starts_at = parse_local_time(args.start, now)
    duration = half_hours_of(args.hours, "--hours")
    credited = half_hours_of(args.points_hours, "--points-hours") if args.points_hours is not None else duration
    a = await act.publish_activity(
        db, cli_operator(), community.id, title=args.title, place=args.place, starts_at=starts_at,
        ends_at=starts_at + dt.timedelta(minutes=30 * duration), capacity=args.capacity, half_hours=credited,
        now=now, project_ref=args.project or "",
    )
    points = pts.current_policy().points_for(a.half_hours)  # the settings `steward` read (cli_settings)
    return (f"已发布志愿活动 #{a.id}「{a.title}」（{community.name}）\n"
            f"时间：{act.when_text(a)}  地点：{a.place}\n"
            f"名额 {a.capacity} 人，每人记 {pts.hours_text(a.half_hours)} 小时（{points} 积分）\n"
            f"签到码：{a.checkin_code}  签退码：{a.checkout_code}")


async def run_on(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    """Run a parsed `activity publish` against a database (the tests call this with theirs); a refusal is one
    sentence in a SystemExit (exit status 1)."""
    try:
        return await args.action(db, now, args)
    except pts.PointsRefused as exc:
        raise SystemExit(f"未完成：{exc.reason}") from None


def _with_database(args: argparse.Namespace) -> None:
    settings = cli_settings(args)

    async def go() -> str:
        async with database(settings) as db:
            return await run_on(db, cli_clock(settings).now(), args)

    run(go())


def show_policy(settings: Settings, out=print) -> None:
    """Every STEWARD_POINTS_* setting as the process reads it (environment over .env over the defaults)."""
    for f in fields(settings):
        if f.name.startswith("points_"):
            value = getattr(settings, f.name)
            out(f"{env_name(f.name)}={'' if value is None else value}")


def _run(coro) -> None:
    run(coro, refusals=(pts.PointsRefused,))


def register(sub) -> None:
    points = sub.add_parser("points", help="志愿积分：核对账目、兑换目录、当前规则")
    commands = points.add_subparsers(dest="points_command", required=True)
    commands.add_parser("audit", help="核对每个账户的余额是否等于流水合计（不一致时退出码为1）").set_defaults(
        func=lambda a: _run(audit(cli_settings(a)))
    )
    policy = commands.add_parser("policy", help="显示当前积分规则（STEWARD_POINTS_*）")
    policy.set_defaults(func=lambda a: show_policy(cli_settings(a)))

    cat = commands.add_parser("catalogue", help="兑换目录")
    cat_sub = cat.add_subparsers(dest="catalogue_command", required=True)
    p = cat_sub.add_parser("add", help="上架一个兑换项目")
    p.add_argument("--community", required=True, help="社区编码、完整名称或名称中独有的一部分")
    p.add_argument("--name", required=True)
    p.add_argument("--price", type=int, required=True, help="所需积分")
    p.add_argument("--stock", type=int, required=True, help="库存（物品）或名额（服务）")
    p.add_argument("--kind", choices=sorted(rw.KIND_LABELS), default=rw.RewardKind.GOODS)
    p.add_argument("--description")
    p.set_defaults(func=lambda a: _run(catalogue_add(cli_settings(a), a)))
    p = cat_sub.add_parser("list", help="列出社区的兑换项目")
    p.add_argument("--community", required=True, help="社区编码、完整名称或名称中独有的一部分")
    p.set_defaults(func=lambda a: _run(catalogue_list(cli_settings(a), a)))
    p = cat_sub.add_parser("restock", help="补充库存或名额")
    p.add_argument("--reward", type=int, required=True)
    p.add_argument("--add", type=int, required=True)
    p.set_defaults(func=lambda a: _run(catalogue_restock(cli_settings(a), a)))

    activity = sub.add_parser("activity", help="志愿活动")
    activity_sub = activity.add_subparsers(dest="activity_command", required=True)
    p = activity_sub.add_parser("list", help="列出社区近期的志愿活动（含签到码、签退码）")
    p.add_argument("--community", required=True, help="社区编码、完整名称或名称中独有的一部分")
    p.set_defaults(func=lambda a: _run(activity_list(cli_settings(a), a)))
    p = activity_sub.add_parser("publish", help="发布一项志愿活动，打印活动编号和签到码、签退码")
    p.add_argument("--community", required=True, help="社区编码、完整名称或名称中独有的一部分")
    p.add_argument("--title", required=True, help="活动名称")
    p.add_argument("--place", required=True, help="地点")
    p.add_argument("--start", required=True, help="开始时间 \"YYYY-MM-DD HH:MM\"")
    p.add_argument("--hours", required=True, help="活动时长（小时，按半小时计，如 2 或 1.5）")
    p.add_argument("--capacity", type=int, required=True, help="名额")
    p.add_argument("--points-hours", dest="points_hours", help="每人记录的服务时长（小时，默认同 --hours）")
    p.add_argument("--project", help="关联的服务项目编号（可选）")
    p.set_defaults(func=_with_database, action=activity_publish)
