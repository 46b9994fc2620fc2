"""`steward consultation create|edit|list|move|cancel`: a community's standing arrangements and its sessions."""

from __future__ import annotations

import argparse
import datetime as dt

from bot.cli_common import cli_clock, cli_operator, cli_settings, database, find_community, run
from bot.config import Settings
from storage import consultation as cs
from storage.clock import Clock, local
from storage.db import Database
from storage.org import get_community

TIME_FORMAT = "%Y-%m-%d %H:%M"

DEFAULT_OPTIONS = (
    ("--time", "start_time", str, "开始时间 HH:MM"),
    ("--venue", "venue", str, "地点"),
    ("--capacity", "capacity", int, "总名额"),
    ("--reserved", "reserved_seats", int, "预留名额（党组织、居委会、单位）"),
    ("--duration", "duration_minutes", int, "时长（分钟）"),
    ("--opens-day", "registration_opens_day", int, "报名开放日（当月几号，9:00 开放）"),
    ("--cutoff-day", "topic_cutoff_day", int, "议题截止日（当月几号，当天24点截止）"),
)


def _changes(args: argparse.Namespace, names: set[str] | None = None) -> dict:
    out = {}
    for _flag, name, _type, _help in DEFAULT_OPTIONS:
        value = getattr(args, name, None)
        if value is not None and (names is None or name in names):
            out[name] = value
    return out


async def create(settings: Settings, args: argparse.Namespace, clock: Clock) -> str:
    async with database(settings) as db:
        community = await find_community(db, args.community)
        now = clock.now()
        changes = _changes(args)
        if changes or await cs.get_defaults(db, community.id) is None:
            await cs.set_defaults(db, community.id, now, cli_operator(), **changes)
        made = await cs.create_upcoming_sessions_for(db, community.id, now, months=args.months)
        sessions = await cs.list_sessions(db, community.id, limit=args.months + 1)
        lines = [f"{community.name}：新建 {made} 场议事。"] + [_line(s) for s in sessions]
        return "\n".join(lines)


async def edit(settings: Settings, args: argparse.Namespace, clock: Clock) -> str:
    async with database(settings) as db:
        changes = {k: v for k, v in {"venue": args.venue, "capacity": args.capacity,
                                     "reserved_seats": args.reserved_seats,
                                     "duration_minutes": args.duration_minutes}.items() if v is not None}
        if not changes:
            return "没有要修改的内容（--venue / --capacity / --reserved / --duration）。"
        session = await cs.edit_session(db, args.session, cli_operator(), clock.now(), **changes)
        return "已修改：" + _line(session)


async def list_all(settings: Settings, args: argparse.Namespace) -> str:
    async with database(settings) as db:
        return await list_text(db, args)


async def list_text(db: Database, args: argparse.Namespace) -> str:
    """`steward consultation list` against a database (the tests call this with theirs): each session with its
    community's name."""
    community_id = (await find_community(db, args.community)).id if args.community else None
    sessions = await cs.list_sessions(db, community_id, limit=args.limit)
    names = {}
    for cid in {s.community_id for s in sessions}:
        community = await get_community(db, cid)
        names[cid] = community.name if community else ""
    return "\n".join(_line(s, names[s.community_id]) for s in sessions) or "还没有议事场次。"


def _line(s: cs.ConsultationSession, community: str = "") -> str:
    status = {"scheduled": "已安排", "cancelled": "已取消", "held": "已召开"}.get(s.status, s.status)
    year, _, month = s.month.partition("-")
    where = f"{community} " if community else ""
    return (f"#{s.id} {where}{int(year)}年{int(month)}月 {local(s.starts_at):%m-%d %H:%M} {s.venue} "
            f"名额{s.seats}(+预留{s.reserved_seats}) "
            f"报名{local(s.registration_opens_at):%m-%d} 议题截止{cs.last_day(s.topic_cutoff_at):%m-%d} {status}")


def _run(coro) -> None:
    run(coro, refusals=(cs.ConsultationError,), prefix="未完成：")


def parse_local_time(text: str, now: dt.datetime) -> dt.datetime:
    """"2026-12-18 14:30" in the district's time zone (that of `now`); SystemExit with a sentence otherwise."""
    try:
        naive = dt.datetime.strptime(" ".join((text or "").split()), TIME_FORMAT)
    except ValueError:
        raise SystemExit(f"时间「{text}」的格式不对，请写成 YYYY-MM-DD HH:MM，例如 2026-12-18 14:30。") from None
    return naive.replace(tzinfo=now.tzinfo)


def _told(view: cs.SessionView | None, what: str) -> str:
    if view is None or not (view.booked or view.waitlisted):
        return "这场议事还没有人预约，无需通知。"
    return f"已预约 {view.booked} 人、候补 {view.waitlisted} 人，{what}已排队发送给他们。"


async def move(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    starts_at = parse_local_time(args.to, now)
    session = await cs.move_session(db, args.session, starts_at, cli_operator(), now)
    return f"已改期：{_line(session)}\n{_told(await cs.session_view(db, session.id), '改期通知')}"


async def cancel(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    session = await cs.cancel_session(db, args.session, args.reason or "", cli_operator(), now)
    told = _told(await cs.session_view(db, session.id), "取消通知")
    return f"已取消：{_line(session)}\n原因：{session.cancel_reason}\n{told}"


async def run_on(db: Database, now: dt.datetime, args: argparse.Namespace) -> str:
    """Run a parsed `move`/`cancel` against a database (the tests call this with theirs); a refusal is one
    sentence in a SystemExit (exit status 1)."""
    try:
        return await args.action(db, now, args)
    except cs.ConsultationError as exc:
        raise SystemExit(f"未完成：{exc.reason}") from None


def _with_database(args: argparse.Namespace) -> None:
    settings = cli_settings(args)

    async def go() -> str:
        async with database(settings) as db:
            return await run_on(db, cli_clock(settings).now(), args)

    run(go())


def register(sub) -> None:
    parser = sub.add_parser("consultation", help="阳光17议：社区议事的默认安排与场次")
    commands = parser.add_subparsers(dest="consultation_command", required=True)

    p = commands.add_parser("create", help="设置社区默认安排，并建好本月（17日未过）与后续月份的场次")
    p.add_argument("community", help="社区编码、完整名称或名称中独有的一部分")
    p.add_argument("--months", type=int, default=1, help="提前建几个月（默认1）")
    for flag, name, kind, text in DEFAULT_OPTIONS:
        p.add_argument(flag, dest=name, type=kind, help=text)
    p.set_defaults(func=lambda a: _run(create(cli_settings(a), a, cli_clock(cli_settings(a)))))

    p = commands.add_parser("edit", help="修改一场议事（地点、名额、预留、时长）")
    p.add_argument("session", type=int, help="场次编号（见 list）")
    p.add_argument("--venue")
    p.add_argument("--capacity", type=int)
    p.add_argument("--reserved", dest="reserved_seats", type=int)
    p.add_argument("--duration", dest="duration_minutes", type=int)
    p.set_defaults(func=lambda a: _run(edit(cli_settings(a), a, cli_clock(cli_settings(a)))))

    p = commands.add_parser("list", help="列出议事场次")
    p.add_argument("--community", help="社区编码、完整名称或名称中独有的一部分")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=lambda a: _run(list_all(cli_settings(a), a)))

    p = commands.add_parser("move", help="改期：一场议事换到新的时间，已预约和候补的居民都会收到通知")
    p.add_argument("session", type=int, help="场次编号（见 list）")
    p.add_argument("--to", required=True, help="新的开始时间 \"YYYY-MM-DD HH:MM\"")
    p.set_defaults(func=_with_database, action=move)

    p = commands.add_parser("cancel", help="取消一场议事（须说明原因），已预约和候补的居民都会收到通知")
    p.add_argument("session", type=int, help="场次编号（见 list）")
    p.add_argument("--reason", required=True, help="取消原因（会告诉居民）")
    p.set_defaults(func=_with_database, action=cancel)
