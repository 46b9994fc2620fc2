"""`steward scheduler` (the jobs in a process of their own), `steward outbox status` (what is stuck) and
`steward outbox resend|drop <id>` (staff decide about a failed or unknown delivery, as 投递失败 does in chat)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

from bot.cli_common import cli_clock, cli_operator, cli_settings, database, run
from storage.clock import local


def start_scheduler(bot: Any):
    """Start the job runner inside a running event loop (the scheduler command); bot.app assembles it."""
    from bot.app import start_scheduler as start

    return start(bot)


def cmd_scheduler(args: argparse.Namespace) -> None:
    from bot.app import build_bot

    settings = cli_settings(args)

    async def run() -> None:
        bot = await build_bot(settings)
        runner = start_scheduler(bot)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        print(f"调度器已启动（{'Redis 选主' if settings.redis_url else '单进程'}），按 Ctrl+C 停止。", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.stop()
            await bot.close()

    asyncio.run(run())


STATUS_WORDS = {
    "pending": "待发送",
    "sending": "发送中",
    "sent": "已发送",
    "waiting": "待用户留言时显示",
    "shown": "已在回复中显示",
    "failed": "发送失败",
    "unknown": "结果未知（需核对）",
    "cancelled": "已取消",
}


async def outbox_report(db: Any, limit: int = 20, offset: int = 0) -> str:
    """Counts by status, then a page of the rows staff must review (failed / unknown)."""
    from storage.outbox import needing_review, status_counts

    counts = await status_counts(db)
    rows = await needing_review(db, limit=limit, offset=offset)
    lines = ["消息发送情况："]
    lines += [f"  {STATUS_WORDS.get(s, s)}：{n}" for s, n in sorted(counts.items())] or ["  （暂无消息）"]
    if rows:
        lines.append(f"需要人工核对的消息（第 {offset + 1}–{offset + len(rows)} 条）：")
        for row in rows:
            when = local(row.created_at).strftime("%m-%d %H:%M")
            lines.append(f"  #{row.id} {when} 居民{row.resident_id} {row.kind} {STATUS_WORDS.get(row.status)}："
                         f"{row.last_error or ''}")
        lines.append("逐条处理：steward outbox resend <编号>（重发）或 steward outbox drop <编号>（放弃）。")
    return "\n".join(lines)


def cmd_outbox_status(args: argparse.Namespace) -> None:
    settings = cli_settings(args)

    async def report() -> str:
        async with database(settings) as db:
            return await outbox_report(db, args.limit, args.offset)

    run(report())


async def outbox_decide(db: Any, now: Any, args: argparse.Namespace) -> str:
    """`resend`/`drop` one failed or unknown row (any community: the command line acts as an admin), audited as
    cli:<user>. A refusal is an OutboxReviewError (one line on stderr, exit status 1)."""
    from storage.outbox import give_up, resend

    if args.outbox_command == "resend":
        row = await resend(db, args.id, cli_operator(), now)
        return f"#{row.id} 已重新排队发送（居民{row.resident_id} {row.kind}）。"
    row = await give_up(db, args.id, cli_operator(), now)
    return f"#{row.id} 已放弃发送，标记为已处理（居民{row.resident_id} {row.kind}）。"


def cmd_outbox_decide(args: argparse.Namespace) -> None:
    from storage.outbox import OutboxReviewError

    settings = cli_settings(args)

    async def decide() -> str:
        async with database(settings) as db:
            return await outbox_decide(db, cli_clock(settings).now(), args)

    run(decide(), refusals=(OutboxReviewError,), prefix="未完成：")


def register(sub: argparse._SubParsersAction) -> None:
    sched = sub.add_parser("scheduler", help="run the scheduled jobs alone (with `serve --no-scheduler`)")
    sched.set_defaults(func=cmd_scheduler)

    outbox = sub.add_parser("outbox", help="the notification outbox")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True)
    status = outbox_sub.add_parser("status", help="counts by status, and failed/unknown rows for review")
    status.add_argument("--limit", type=int, default=20)
    status.add_argument("--offset", type=int, default=0)
    status.set_defaults(func=cmd_outbox_status)
    resend = outbox_sub.add_parser("resend", help="send a failed/unknown row once more (staff judge it undelivered)")
    resend.add_argument("id", type=int, help="the row's number (#id in `steward outbox status`)")
    resend.set_defaults(func=cmd_outbox_decide)
    drop = outbox_sub.add_parser("drop", help="give up on a failed/unknown row (the resident was told another way)")
    drop.add_argument("id", type=int, help="the row's number (#id in `steward outbox status`)")
    drop.set_defaults(func=cmd_outbox_decide)
