"""The async database: one engine, read sessions and write transactions.

SQLite (embedded default) and PostgreSQL share the same code. On SQLite a write transaction starts with
BEGIN IMMEDIATE so two writers queue for the lock instead of failing halfway with "database is locked";
reads stay deferred so they never wait for writers (WAL mode).

A read session runs each statement on its own (no BEGIN, no ROLLBACK): on PostgreSQL that is two round trips
fewer per read, on SQLite one trip fewer through aiosqlite's thread. Each statement still sees a consistent
state — what PostgreSQL's READ COMMITTED gives a multi-statement transaction anyway. A read session that tries
to write (an INSERT, or an autoflush of an object changed in it) is refused rather than committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.kv import StoreUnavailable

log = logging.getLogger("steward.db")
T = TypeVar("T")

# Tables whose committed changes other layers want to hear about (e.g. to drop a cached copy), with the
# function that names the changed row. Filled by the table modules through `watch`.
_WATCHED: dict[str, Callable[[Any], str]] = {}
Changes = dict[str, set[Any]]  # table → the keys (`watch`) of its rows a transaction changed


def watch(table: str, key: Callable[[Any], str]) -> None:
    _WATCHED[table] = key


@event.listens_for(Session, "after_flush")
def _collect_changes(session: Session, _flush_context) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        name = getattr(obj, "__tablename__", None)
        if name in _WATCHED:
            session.info.setdefault("changes", {}).setdefault(name, set()).add(_WATCHED[name](obj))


class ReadOnlySession(RuntimeError):
    """A write attempted through `Database.read()` (a bug: writes go through `Database.write()`)."""


class DatabaseUnavailable(Exception):
    """The database did not answer in time (down, frozen, or every pooled connection busy too long)."""


class CommitUnknown(DatabaseUnavailable):
    """The database stopped answering during COMMIT: the change may or may not have been saved."""


@dataclass(frozen=True)
class DatabaseLimits:
    """How long the bot waits for PostgreSQL. Each bound is well under WeChat's 5 s: a hung server costs a
    resident a polite "busy" reply (or a push saying the step was not saved), never a silent loss."""

    # Kept connections: an overflow connection is closed when it is returned, and under a steady 50 messages in
    # flight the pool of 10 opened and closed one per few messages (a connect is ~20 statements' worth of CPU).
    pool_size: int = 20
    max_overflow: int = 10
    # A pooled connection idle this long is pinged before use (a dead one is replaced, not handed out). Not
    # every checkout: asyncpg's ping is three round trips, as much as the query it guards; a connection used
    # within this window that has died since fails its statement, which invalidates the whole pool.
    ping_after: float = 2.0
    # Seconds a query waits for a pooled connection. Longer than WeChat's window on purpose: the gateway answers
    # `success` at 4 s whatever happens, so a burst that queues here finishes and is pushed, instead of being
    # told "busy"; a hung server still fails each waiter within this bound (and the resident is told by push).
    pool_wait: float = 10.0
    connect_timeout: float = 2.0
    command_timeout: float = 3.0  # one statement; the server is also told to stop after this long


# How many write transactions committed in this task (and tasks it starts): lets the conversation engine tell
# "nothing was saved" from "saved, but a later step failed" after an error.
_commits: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("steward_commits", default=None)


def count_commits() -> list[int]:
    """Start counting this task's commits; returns the counter (a one-element list)."""
    counter = [0]
    _commits.set(counter)
    return counter


class Database:
    def __init__(
        self, url: str, *, echo: bool = False, schema: str | None = None, limits: DatabaseLimits | None = None
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.limits = limits = limits or DatabaseLimits()
        # Parameters never reach a log line or an exception's text: they carry phones, names and rooms.
        if self.is_sqlite:
            self.engine: AsyncEngine = create_async_engine(
                url, echo=echo, connect_args={"timeout": 30}, pool_size=5, max_overflow=10, hide_parameters=True
            )
            _make_sqlite_transactions_explicit(self.engine)
        else:
            server_settings = {"statement_timeout": str(int(limits.command_timeout * 1000))}
            if schema:
                server_settings["search_path"] = schema
            connect_args = {
                "server_settings": server_settings,
                "timeout": limits.connect_timeout,
                "command_timeout": limits.command_timeout,
            }
            self.engine = create_async_engine(
                url, echo=echo, pool_size=limits.pool_size, max_overflow=limits.max_overflow,
                pool_timeout=limits.pool_wait, connect_args=connect_args, hide_parameters=True,
            )
            _ping_when_idle(self.engine, limits.ping_after)
        self._writer = self.engine.execution_options(steward_write=True)
        self._reader = self.engine.execution_options(steward_read=True) if self.is_sqlite else \
            self.engine.execution_options(steward_read=True, isolation_level="AUTOCOMMIT")
        _refuse_writes_when_reading(self.engine)
        self._read_sessions = async_sessionmaker(self._reader, class_=AsyncSession, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self._writer, class_=AsyncSession, expire_on_commit=False)
        # Called after a write transaction commits, with the watched rows it changed.
        self.on_commit: list[Callable[[Changes], Awaitable[None]]] = []
        self.errors = 0  # sessions that failed to reach or hear from the server (bot/metrics.py reads it)
        # Per-process copies of rarely changed rows, by the module that keeps them (storage.org's buildings);
        # each drops what this process commits through `on_commit`.
        self.memo: dict[str, Any] = {}
        # SQLite takes one writer at a time. Writers of this process queue here, in order, instead of in
        # SQLite's busy handler, which sleeps in growing steps and lets a late writer overtake (p99 of seconds
        # at 50 residents); the busy handler still orders this process against others (a separate scheduler).
        self._writers = asyncio.Lock() if self.is_sqlite else None
        self._sqlite_writer: _SqliteWriter | None = None

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for queries; nothing it changes is committed."""
        try:
            async with self._read_sessions() as session:
                yield session
        except Exception as exc:
            self._count(exc)
            raise

    def _count(self, exc: BaseException) -> None:
        # A Redis outage met inside a transaction is Redis's error (storage.kv counts it), not the database's.
        if is_unavailable(exc) and not isinstance(exc, StoreUnavailable):
            self.errors += 1

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back if it raises.

        What runs after the commit (cache invalidation hooks) cannot undo it, so it never raises: a change
        that committed is reported as saved whatever fails afterwards."""
        async with self._write_sessions() as session:
            async with self._write_turn():
                transaction = await session.begin()
                try:
                    yield session
                except BaseException as exc:
                    self._count(exc)
                    await _quietly(transaction.rollback())
                    raise
                try:
                    await transaction.commit()
                except BaseException as exc:
                    if _lost_contact(exc):
                        self.errors += 1
                        raise CommitUnknown(str(exc) or type(exc).__name__) from exc
                    raise
            counter = _commits.get()
            if counter is not None:
                counter[0] += 1
            changes = session.info.pop("changes", None)
            if changes:
                for hook in self.on_commit:
                    try:
                        await hook(changes)
                    except Exception:
                        log.warning("after-commit hook %s failed; its cache entries expire on their own",
                                    getattr(hook, "__qualname__", hook), exc_info=True)

    @contextlib.asynccontextmanager
    async def _write_turn(self) -> AsyncIterator[None]:
        """On SQLite, this process's turn to write (released at COMMIT, before the after-commit hooks, which may
        write themselves); the wait is bounded like a pool wait. On PostgreSQL, nothing: rows are locked."""
        if self._writers is None:
            yield
            return
        try:
            async with asyncio.timeout(self.limits.pool_wait):
                await self._writers.acquire()
        except TimeoutError:
            self.errors += 1
            raise DatabaseUnavailable("waited too long for the SQLite writer's turn") from None
        try:
            yield
        finally:
            self._writers.release()

    async def write_at_once(self, work: Callable[[Connection], T]) -> T:
        """A write transaction of Core statements: `work` gets a synchronous connection; committed when it returns,
        rolled back if it raises. On SQLite the whole of it runs in one hop to a thread of its own, in this
        process's writer turn: through aiosqlite each statement is a hop and a turn of a busy event loop, and every
        other writer waits through all of them (a report held the turn ~14 ms at 100 reports a second, and the
        submit's p99 was 0.9 s). On PostgreSQL it runs in `write()`'s transaction."""
        if not self.is_sqlite:
            async with self.write() as session:
                connection = await session.connection()
                return await connection.run_sync(work)
        if self._sqlite_writer is None:
            self._sqlite_writer = _SqliteWriter(self.url)
        async with self._write_turn():
            try:
                result = await self._sqlite_writer.run(work)
            except BaseException as exc:
                self._count(exc)
                raise
        counter = _commits.get()
        if counter is not None:
            counter[0] += 1
        return result

    async def ping(self, timeout: float = 1.0) -> bool:
        try:
            async with asyncio.timeout(timeout):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._sqlite_writer is not None:
            self._sqlite_writer.close()
            self._sqlite_writer = None


class _SqliteWriter:
    """A synchronous engine on the same SQLite file and the one thread that uses it (sqlite3 connections stay in
    the thread that made them), for `Database.write_at_once`."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url.replace("+aiosqlite", ""), connect_args={"timeout": 30}, hide_parameters=True)
        _make_sqlite_transactions_explicit(self.engine)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")

    async def run(self, work: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.thread, self._transaction, work)

    def _transaction(self, work: Callable[[Connection], T]) -> T:
        with self.engine.connect() as connection:
            connection = connection.execution_options(steward_write=True)
            with connection.begin():
                return work(connection)

    def close(self) -> None:
        self.thread.shutdown(wait=True)
        self.engine.dispose()


def insert_for(session: AsyncSession, table: Any):
    """INSERT for the session's database (SQLite or PostgreSQL), so `.on_conflict_do_nothing(...)` /
    `.on_conflict_do_update(...)` work on either: the one place that picks the dialect."""
    make = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    return make(table)


def is_unavailable(exc: BaseException) -> bool:
    """An error that says the database could not be reached or did not answer in time (not a bug, not a
    constraint): the gateway answers such a step with "busy" instead of an error."""
    return isinstance(exc, DatabaseUnavailable) or _lost_contact(exc)


def _lost_contact(exc: BaseException) -> bool:
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, PoolTimeout | TimeoutError | ConnectionError | OSError):
            return True
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        name = type(exc).__name__
        if name in ("QueryCanceledError", "ConnectionDoesNotExistError", "InterfaceError", "CannotConnectNowError",
                    "ConnectionFailureError", "AdminShutdownError", "InternalClientError"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


async def _quietly(aw: Awaitable[Any]) -> None:
    """A rollback after a failure: bounded, and never hiding the failure that caused it (the server discards
    an unfinished transaction when its connection goes)."""
    try:
        async with asyncio.timeout(2):
            await aw
    except Exception as exc:
        log.debug("rollback after a failure did not finish: %s", exc)


def _ping_when_idle(engine: AsyncEngine, idle: float) -> None:
    """pool_pre_ping, for connections that sat in the pool longer than `idle` seconds only."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection, record) -> None:
        record.info["steward_idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection, record, _proxy) -> None:
        since = record.info.get("steward_idle_since")
        if since is None or time.monotonic() - since <= idle:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("a pooled connection did not answer its ping") from exc  # the pool retries


def _make_sqlite_transactions_explicit(engine: AsyncEngine | Engine) -> None:
    engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take BEGIN away from the driver so the "begin" hook below decides DEFERRED or IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        options = conn.get_execution_options()
        if options.get("steward_read"):
            return  # each statement on its own (see the module's docstring)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("steward_write") else "BEGIN")


READ_STATEMENTS = ("SELECT", "WITH", "PRAGMA", "SHOW", "EXPLAIN", "VALUES")


def _refuse_writes_when_reading(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _check(conn, _cursor, statement: str, _parameters, _context, _executemany) -> None:
        if conn.get_execution_options().get("steward_read") and not statement.lstrip()[:7].upper().startswith(
                READ_STATEMENTS):
            # Without a transaction it would be committed at once: a read session's change must never be.
            raise ReadOnlySession(f"a read session tried to write: {statement.split(None, 1)[0]}")
