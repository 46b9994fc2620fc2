"""What every `steward …` feature command shares: who is acting, opening the database, finding a community, running."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from sqlmodel import select

from bot.config import Settings, load_settings, use_settings
from bot.logging_setup import install_request_ids
from storage import migrate
from storage.actor import Actor
from storage.clock import Clock
from storage.db import Database
from storage.org import Community

SCHEMA_OUT_OF_DATE = "数据库结构不是最新，请先运行 steward db upgrade。"


def cli_actor() -> str:
    """The audit-log actor of a command-line action: `cli:<user name>`."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "cli:unknown"


def cli_operator() -> Actor:
    """The actor of a command-line action: the operator, trusted with the whole district, named for the audit."""
    return Actor.operator(cli_actor())


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings of this `steward` run (environment over --env-file / .env, then --host/--port), installed as
    the process's: storage reads the points policy and the calendar file from them."""
    settings = load_settings(env_file=getattr(args, "env_file", None))
    changes = {}
    if getattr(args, "host", None):
        changes["host"] = args.host
    if getattr(args, "port", None):
        changes["port"] = args.port
    if changes:
        settings = settings.replace(**changes)
    use_settings(settings)
    if settings.log_format == "json":  # the command's stderr lines become JSON objects from here on
        install_request_ids(json_lines=True)
    return settings


def cli_settings(args: argparse.Namespace) -> Settings:
    return settings_from(args)


def cli_clock(settings: Settings) -> Clock:
    return Clock(settings.timezone)


async def open_database(settings: Settings) -> Database:
    """The database, its schema brought up to date on SQLite; elsewhere refused unless already current."""
    db = Database(settings.database_url, limits=settings.database_limits)
    if settings.is_sqlite:
        await migrate.upgrade(db)
    elif not await migrate.is_current(db):
        await db.dispose()
        raise SystemExit(SCHEMA_OUT_OF_DATE)
    return db


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[Database]:
    """`open_database`, disposed of when the block ends (however it ends)."""
    db = await open_database(settings)
    try:
        yield db
    finally:
        await db.dispose()


MAX_LISTED = 10  # communities named in a "which one?" sentence


def _named(rows: list[Community]) -> str:
    more = f"等{len(rows)}个" if len(rows) > MAX_LISTED else ""
    return "、".join(f"{c.name}（{c.code}）" for c in rows[:MAX_LISTED]) + more


async def find_community(db: Database, text: str) -> Community:
    """The community a `--community` option names: its code, its full name, or a part of its name that only one
    community's name contains. SystemExit with one Chinese sentence listing the matches (or the communities there
    are) when it names none or several."""
    text = text.strip()
    async with db.read() as s:
        rows = list((await s.exec(select(Community).order_by(Community.code))).all())
    for exact in ([c for c in rows if c.code == text], [c for c in rows if c.name == text],
                  [c for c in rows if c.code.lower() == text.lower()]):
        if len(exact) == 1:
            return exact[0]
    matches = [c for c in rows if text and text in c.name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise SystemExit(f"「{text}」对应多个社区：{_named(matches)}，请写社区编码或完整名称。")
    if not rows:
        raise SystemExit(f"没有找到社区「{text}」：还没有导入任何社区。")
    raise SystemExit(f"没有找到社区「{text}」，可选：{_named(rows)}。")


async def community_by_code(db: Database, code: str, *, or_name: bool = False) -> Community:
    """The old name of `find_community` (code, name or a unique part of it, whatever `or_name` says), kept while
    `bot/cli_review.py` still calls it."""
    return await find_community(db, code)


def run(coro: Coroutine[Any, Any, Any], refusals: tuple[type[Exception], ...] = (), prefix: str = "") -> None:
    """Run one command: a text result is printed, a non-zero int is the exit status, and a refusal (an exception
    with a Chinese `reason`, of the given types) is one line on stderr with exit status 1 — never a traceback."""
    try:
        result = asyncio.run(coro)
    except refusals as exc:
        print(f"{prefix}{exc.reason}", file=sys.stderr)
        sys.exit(1)
    if isinstance(result, str):
        print(result)
    elif isinstance(result, int) and not isinstance(result, bool) and result:
        sys.exit(result)


def run_with_db(args: argparse.Namespace, command: Callable[[Database, dt.datetime, argparse.Namespace],
                                                            Awaitable[Any]]) -> None:
    """One `steward` command against the settings' database: `command(db, now, args)`, its result printed."""
    settings = cli_settings(args)

    async def go() -> Any:
        async with database(settings) as db:
            return await command(db, cli_clock(settings).now(), args)

    run(go())


def server_loop(settings: Settings) -> asyncio.AbstractEventLoop | None:
    """The event loop a server process runs on: uvloop when it is installed and not switched off (STEWARD_UVLOOP),
    else None (aiohttp makes the standard library's)."""
    if not settings.uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop()
