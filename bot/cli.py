"""The `steward` command."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys

from aiohttp import web

from bot.cli_common import settings_from
from bot.config import ConfigError, check_public_serving
from bot.logging_setup import configure_logging

log = logging.getLogger("steward")

# Each feature's commands live in its own module with `register(subparsers)`; list them here.
FEATURE_COMMANDS = [
    "bot.cli_org",
    "bot.cli_needs",
    "bot.cli_push",
    "bot.cli_consultation",
    "bot.cli_points",
    "bot.cli_review",
]


def cmd_serve(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    check_public_serving(settings)  # before anything is imported, opened or bound

    from bot.app import build_bot, make_app, warm_up

    async def app_factory() -> web.Application:
        bot = await build_bot(settings)
        await warm_up()
        app = make_app(bot)
        if not args.no_scheduler:
            from bot.cli_push import start_scheduler

            runner = start_scheduler(bot)
            app.on_cleanup.append(lambda _app: runner.stop())
        app.on_cleanup.append(lambda _app: bot.close())
        mode = "安全模式" if settings.safe_mode else "明文模式"
        state = "Redis" if settings.redis_url else "内存"
        log.info("steward serving on http://%s:%s/wechat (%s, state: %s)", settings.host, settings.port, mode, state)
        return app

    web.run_app(app_factory(), host=settings.host, port=settings.port, print=None, access_log=None)


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
    from bot.chat import run_chat

    asyncio.run(run_chat(settings_from(args), args.openid, args.url))


def cmd_menu_push(args: argparse.Namespace) -> None:
    from bot.menu import push_menu

    settings = settings_from(args)
    print(asyncio.run(push_menu(settings)))


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
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply every migration").set_defaults(func=cmd_db_upgrade)

    chat = sub.add_parser("chat", help="chat with the bot in this terminal")
    chat.add_argument("--openid", default="o_demo_resident")
    chat.add_argument("--url", help="a running bot (default: start one in-process with a fake WeChat API)")
    chat.set_defaults(func=cmd_chat)

    menu = sub.add_parser("menu", help="the Official Account custom menu")
    menu_sub = menu.add_subparsers(dest="menu_command", required=True)
    menu_sub.add_parser("push", help="create the custom menu through the WeChat API").set_defaults(func=cmd_menu_push)

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
