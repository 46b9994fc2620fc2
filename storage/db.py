"""The async database: one engine, read sessions and write transactions.

SQLite (embedded default) and PostgreSQL share the same code. On SQLite a write transaction starts with
BEGIN IMMEDIATE so two writers queue for the lock instead of failing halfway with "database is locked";
reads stay deferred so they never wait for writers (WAL mode).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

# Tables whose committed changes other layers want to hear about (e.g. to drop a cached copy), with the
# function that names the changed row. Filled by the table modules through `watch`.
_WATCHED: dict[str, Callable[[Any], str]] = {}
Changes = dict[str, set[str]]


def watch(table: str, key: Callable[[Any], str]) -> None:
    _WATCHED[table] = key


@event.listens_for(Session, "after_flush")
def _collect_changes(session: Session, _flush_context) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        name = getattr(obj, "__tablename__", None)
        if name in _WATCHED:
            session.info.setdefault("changes", {}).setdefault(name, set()).add(_WATCHED[name](obj))


class Database:
    def __init__(self, url: str, *, echo: bool = False, schema: str | None = None) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine: AsyncEngine = create_async_engine(
                url, echo=echo, connect_args={"timeout": 30}, pool_size=5, max_overflow=10
            )
            _make_sqlite_transactions_explicit(self.engine)
        else:
            connect_args = {"server_settings": {"search_path": schema}} if schema else {}
            self.engine = create_async_engine(
                url, echo=echo, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=connect_args
            )
        self._writer = self.engine.execution_options(steward_write=True)
        self._read_sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self._writer, class_=AsyncSession, expire_on_commit=False)
        # Called after a write transaction commits, with the watched rows it changed.
        self.on_commit: list[Callable[[Changes], Awaitable[None]]] = []

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for queries; nothing it changes is committed."""
        async with self._read_sessions() as session:
            yield session

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        async with self._write_sessions() as session:
            async with session.begin():
                yield session
            changes = session.info.pop("changes", None)
            if changes:
                for hook in self.on_commit:
                    await hook(changes)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()


def _make_sqlite_transactions_explicit(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take BEGIN away from the driver so the "begin" hook below decides DEFERRED or IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn) -> None:
        immediate = conn.get_execution_options().get("steward_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
