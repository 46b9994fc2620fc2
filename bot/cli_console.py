"""`steward console` (the staff console alone, for a separate intranet host) and `steward console link <openid>`
(a sign-in link for a staff member, printed for an admin at the server)."""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from bot.cli_common import cli_clock, cli_operator, cli_settings, database, run, server_loop
from bot.config import check_public_serving
from handlers.console_link import login_url
from storage.console_auth import ConsoleAuthError, issue_link
from storage.residents import find_resident

log = logging.getLogger("steward")


async def link_text(db, openid: str, public_base: str, now) -> str:
    resident = await find_resident(db, openid)
    if resident is None or resident.id is None:
        raise ConsoleAuthError(f"没有找到 openid 为 {openid} 的用户。")
    token = await issue_link(db, cli_operator(), resident.id, now)
    return f"{login_url(public_base, token)}\n（10分钟内有效，只能用一次）"


def cmd_console_link(args: argparse.Namespace) -> None:
    settings = cli_settings(args)

    async def go() -> str:
        async with database(settings) as db:
            return await link_text(db, args.openid, settings.public_base, cli_clock(settings).now())

    run(go(), (ConsoleAuthError,))


def cmd_console(args: argparse.Namespace) -> None:
    settings = cli_settings(args)
    check_public_serving(settings)

    from bot.app import build_bot, mount_console

    async def app_factory() -> web.Application:
        bot = await build_bot(settings)
        app = web.Application()
        mount_console(app, bot)
        app.add_routes([web.get("/", lambda _r: web.HTTPFound("/console/"))])
        app.on_cleanup.append(lambda _app: bot.close())
        # The residents' notices of console actions wait in the outbox for the `serve` process's sender.
        log.info("steward console on http://%s:%s/console/", settings.host, settings.port)
        return app

    web.run_app(app_factory(), host=settings.host, port=settings.port, print=None, access_log=None,
                loop=server_loop(settings))


def register(sub: argparse._SubParsersAction) -> None:
    console = sub.add_parser("console", help="run the staff web console alone (serve already includes it)")
    console.add_argument("--host")
    console.add_argument("--port", type=int)
    console.set_defaults(func=cmd_console)
    console_sub = console.add_subparsers(dest="console_command")
    link = console_sub.add_parser("link", help="print a single-use sign-in link for a staff member")
    link.add_argument("openid")
    link.set_defaults(func=cmd_console_link)
