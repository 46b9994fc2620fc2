"""What every `steward …` feature command shares: who is acting, opening the database, finding a community, running."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from sqlmodel import select

from bot.config import Settings, load_settings, use_settings
from storage import migrate
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


async def community_by_code(db: Database, code: str, *, or_name: bool = False) -> Community:
    """The community with this code (or, with `or_name`, this name); SystemExit with a sentence when there is none."""
    condition = Community.code == code
    if or_name:
        condition = condition | (Community.name == code)
    async with db.read() as s:
        row = (await s.exec(select(Community).where(condition))).first()
    if row is None:
        raise SystemExit(f"没有找到社区：{code}" if or_name else f"没有编码为 {code} 的社区。")
    return row


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
