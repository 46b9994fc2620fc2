"""The `steward` command."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import logging
import os
import sys

from aiohttp import web

from bot.cli_common import server_loop, settings_from
from bot.config import ConfigError, Settings, check_public_serving, is_loopback
from bot.logging_setup import configure_logging
from storage.clock import Clock, describe_offset, parse_offset

log = logging.getLogger("steward")
LISTEN_BACKLOG = 2048

# Each feature's commands live in its own module with `register(subparsers)`; list them here.
FEATURE_COMMANDS = [
    "bot.cli_org",
    "bot.cli_needs",
    "bot.cli_push",
    "bot.cli_consultation",
    "bot.cli_points",
    "bot.cli_review",
    "bot.cli_classifier",
    "bot.cli_console",
    "bot.cli_stats",
    "bot.cli_assess",
]


def clock_offset(text: str) -> dt.timedelta:
    """argparse type of --clock-offset: 3d, 2天, 12h, 1d12h (forward only)."""
    try:
        return parse_offset(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_dev_clock(settings: Settings, offset: dt.timedelta | None) -> None:
    """A moved clock is for demos on this machine: on any other address residents would get wrong deadlines."""
    if offset is not None and not is_loopback(settings.host):
        raise ConfigError(f"--clock-offset 只用于本机演示，不能在 {settings.host} 上使用；"
                          "去掉它，或在 127.0.0.1 上运行。")


def cmd_serve(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    check_dev_clock(settings, args.clock_offset)
    check_public_serving(settings)  # before anything is imported, opened or bound

    from bot.app import serving_app

    async def app_factory() -> web.Application:
        clock = Clock(settings.timezone, args.clock_offset) if args.clock_offset is not None else None
        app = await serving_app(settings, with_scheduler=not args.no_scheduler, clock=clock)
        if clock is not None:
            log.warning("dev clock: %s ahead of the wall clock, now %s", describe_offset(clock.offset),
                        clock.now().strftime("%Y-%m-%d %H:%M"))
        mode = "安全模式" if settings.safe_mode else "明文模式"
        state = "Redis" if settings.redis_url else "内存"
        log.info("steward serving on http://%s:%s/wechat (%s, state: %s)", settings.host, settings.port, mode, state)
        return app

    def run() -> None:
        # WeChat delivers a district's burst (a broadcast answered, a morning's first messages) as that many
        # connections at once: a queue of 128 (the default) drops the rest, which reconnect a second later.
        web.run_app(app_factory(), host=settings.host, port=settings.port, print=None, access_log=None,
                    reuse_port=args.workers > 1, loop=server_loop(settings), backlog=LISTEN_BACKLOG)

    if args.workers <= 1:
        run()
        return
    if not settings.redis_url:
        raise ConfigError("--workers 需要 Redis（STEWARD_REDIS_URL）：多个进程要共享会话状态、锁和去重记录。")
    from bot.workers import serve_workers

    sys.exit(serve_workers(run, args.workers, settings.host, settings.port))


def cmd_db_upgrade(args: argparse.Namespace) -> None:
    from storage import migrate
    from storage.db import Database

    settings = settings_from(args)

    async def run() -> None:
        db = Database(settings.database_url)
        try:
            await migrate.upgrade(db)
        finally:
            await db.dispose()

    asyncio.run(run())
    print("数据库结构已是最新。")


def cmd_chat(args: argparse.Namespace) -> None:
    if args.url and args.clock_offset is not None:
        raise ConfigError("--clock-offset 只拨本进程内的机器人的时钟；"
                          "连接已运行的机器人时，请给 steward serve 加 --clock-offset。")
    from bot.chat import run_chat

    asyncio.run(run_chat(settings_from(args), args.openid, args.url, clock_offset=args.clock_offset))


def cmd_menu_push(args: argparse.Namespace) -> None:
    from bot.menu import push_menu

    settings = settings_from(args)
    print(asyncio.run(push_menu(settings)))


def cmd_menu_sync_tags(args: argparse.Namespace) -> None:
    from bot.menu import sync_tags_command

    print(asyncio.run(sync_tags_command(settings_from(args), args.all)))


def cmd_fake_wechat(args: argparse.Namespace) -> None:
    from bot import fake_wechat

    fake_wechat.main(["--host", args.host or "127.0.0.1", "--port", str(args.port or 8081)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steward", description="民需管家 Needs Steward")
    parser.add_argument("--env-file", help="a KEY=VALUE settings file (default: .env if present)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the bot (creates/upgrades the SQLite schema on first start)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--no-scheduler", action="store_true", help="run the jobs in a separate `steward scheduler`")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="N processes on one port (SO_REUSEPORT; needs Redis; see bot/workers.py)")
    serve.add_argument("--clock-offset", type=clock_offset, metavar="3d",
                       help="dev only (loopback): run the bot's clock this far ahead (3d, 12h, 2天)")
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply every migration").set_defaults(func=cmd_db_upgrade)

    chat = sub.add_parser("chat", help="chat with the bot in this terminal")
    chat.add_argument("--openid", default="o_demo_resident")
    chat.add_argument("--url", help="a running bot, e.g. the URL serve prints (default: start one in-process with "
                                    "a fake WeChat API)")
    chat.add_argument("--clock-offset", type=clock_offset, metavar="3d",
                      help="dev only: the in-process bot's clock starts this far ahead (3d, 12h, 2天); /快进 moves it")
    chat.set_defaults(func=cmd_chat)

    menu = sub.add_parser("menu", help="the Official Account custom menu")
    menu_sub = menu.add_subparsers(dest="menu_command", required=True)
    menu_sub.add_parser("push", help="create the custom menu through the WeChat API").set_defaults(func=cmd_menu_push)
    sync = menu_sub.add_parser("sync-tags", help="bring staff members' WeChat menu tags in line with their roles now")
    sync.add_argument("--all", action="store_true", help="every staff member, not only those queued by a grant")
    sync.set_defaults(func=cmd_menu_sync_tags)

    fake = sub.add_parser("fake-wechat", help="run the fake WeChat API server (demos, benchmarks)")
    fake.add_argument("--host")
    fake.add_argument("--port", type=int)
    fake.set_defaults(func=cmd_fake_wechat)

    for module in FEATURE_COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    configure_logging()  # INFO to stderr, phone numbers masked in every line
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's own flush at exit
    except BrokenPipeError:  # `steward needs list | head`: the reader has all it wanted; leave quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # what is still buffered goes nowhere at exit, not to a traceback
        sys.exit(141)  # 128 + SIGPIPE, as a shell tool ended by the closed pipe would
    except ConfigError as exc:
        print(f"配置错误：{exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl+C is how an operator stops serve or chat: no traceback
        sys.exit(130)
    except Exception as exc:  # start-up failures read as one sentence, not a traceback
        from bot.app import SchemaOutOfDate

        if isinstance(exc, SchemaOutOfDate | OSError):
            print(f"无法启动：{exc}", file=sys.stderr)
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
