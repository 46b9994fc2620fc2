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
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.kv import StoreUnavailable

log = logging.getLogger("steward.db")
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")

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
    """The database stopped answering during COMMIT: the change may or may not have been saved.

    `server` names the PostgreSQL server process that had the change (its pid, and a wall-clock time after it
    started) so that `Database.settle` can end it before anyone looks the outcome up."""

    def __init__(self, message: str, server: tuple[int, float] | None = None) -> None:
        super().__init__(message)
        self.server = server


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


def _count_commit() -> None:
    counter = _commits.get()
    if counter is not None:
        counter[0] += 1


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
            # The process in pg_stat_activity: whose session holds a lock, when one is held too long.
            server_settings = {"statement_timeout": str(int(limits.command_timeout * 1000)),
                               "application_name": f"steward:{os.getpid()}"}
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
        # PostgreSQL: one statement as its own transaction (`write_at_once(one_statement=True)`).
        self._autocommit_writer = self.engine.execution_options(
            steward_write=True, steward_one_statement=True, isolation_level="AUTOCOMMIT")
        self._reader = self.engine.execution_options(steward_read=True) if self.is_sqlite else \
            self.engine.execution_options(steward_read=True, isolation_level="AUTOCOMMIT")
        _refuse_writes_when_reading(self.engine)
        self._read_sessions = async_sessionmaker(self._reader, class_=AsyncSession, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self._writer, class_=AsyncSession, expire_on_commit=False)
        # Called after a write transaction commits, with the watched rows it changed.
        self.on_commit: list[Callable[[Changes], Awaitable[None]]] = []
        self.errors = 0  # sessions that failed to reach or hear from the server (bot/metrics.py reads it)
        # What the table modules keep with this database in this process, by module: copies of rarely changed
        # rows (storage.org's buildings; each drops what this process commits through `on_commit`), and writes
        # that go together (storage.residents' contacts, a `Coalesced`).
        self.memo: dict[str, Any] = {}
        # SQLite takes one writer at a time. Writers of this process queue here, in order, instead of in
        # SQLite's busy handler, which sleeps in growing steps and lets a late writer overtake (p99 of seconds
        # at 50 residents); the busy handler still orders this process against others (a separate scheduler).
        self._writers = asyncio.Lock() if self.is_sqlite else None
        self._sqlite_writer: _SqliteWriter | None = None
        self._sqlite_reader: _SqliteReader | None = None

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for queries; nothing it changes is committed."""
        try:
            async with self._read_sessions() as session:
                yield session
        except Exception as exc:
            self._count(exc)
            raise

    async def rows(self, statement: Any, params: dict[str, Any] | None = None) -> list[Any]:
        """The rows of one Core statement of columns (not ORM objects), read on a plain connection: the hot path's
        reads (every report's), where a session's unit of work cost ~0.4 ms of CPU a read on PostgreSQL and a
        connection ~0.28. Same reader's rules (no transaction, no writes). On SQLite the whole read is one hop
        to a reader thread (`_SqliteReader`): through aiosqlite it was four, each a turn of a busy event loop."""
        try:
            if self.is_sqlite:
                if self._sqlite_reader is None:
                    self._sqlite_reader = _SqliteReader(self.url)
                reader = self._sqlite_reader
                return await asyncio.get_running_loop().run_in_executor(reader.threads, reader.rows, statement,
                                                                        params or {})
            async with self._reader.connect() as connection:
                return list((await connection.execute(statement, params or {})).all())
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
                connection = None if self.is_sqlite else await session.connection()
                server = None if connection is None else _server_of(connection)
                try:
                    await transaction.commit()
                except BaseException as exc:
                    if _lost_contact(exc):
                        self.errors += 1
                        if connection is not None:
                            await _never_again(connection)
                        raise CommitUnknown(str(exc) or type(exc).__name__, server) from exc
                    raise
            _count_commit()
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

    async def write_at_once(self, work: Callable[[Connection], T], *, one_statement: bool = False) -> T:
        """A write transaction of Core statements: `work` gets a synchronous connection; committed when it returns,
        rolled back if it raises.

        On SQLite the writes queued at that moment go together, in order, in one hop to a thread of its own and
        one transaction (`_SqliteWriter`), each in a savepoint of its own, so one that raises undoes only itself:
        through aiosqlite each statement was a hop and a turn of a busy event loop while every other writer waited,
        and even one hop per write held the one writer's turn for a loop's turn (the submit's p50 350 ms at 90
        reports a second).

        On PostgreSQL it runs in `write()`'s transaction; with `one_statement` (on PostgreSQL, work runs exactly
        one statement; a second is refused) the statement is its own transaction, without BEGIN and COMMIT: the
        rows it locks are released by the server as it ends, not a client round trip later. Contact lost during
        it raises CommitUnknown: it may have been saved."""
        if self.is_sqlite:
            return await self._queue_sqlite_write(work)
        if not one_statement:
            async with self.write() as session:
                connection = await session.connection()
                return await connection.run_sync(work)
        try:
            async with self._autocommit_writer.connect() as connection:
                server = _server_of(connection)
                try:
                    connection.sync_connection.info["steward_statements"] = 0
                    result = await connection.run_sync(work)
                except BaseException as exc:
                    if _lost_contact(exc):
                        self.errors += 1
                        await _never_again(connection)
                        raise CommitUnknown(str(exc) or type(exc).__name__, server) from exc
                    raise
        except CommitUnknown:
            raise
        except BaseException as exc:
            self._count(exc)
            raise
        _count_commit()
        return result

    async def _queue_sqlite_write(self, work: Callable[[Connection], T]) -> T:
        if self._sqlite_writer is None:
            self._sqlite_writer = _SqliteWriter(self.url)
        writer = self._sqlite_writer
        job = _Job(work, asyncio.get_running_loop().create_future())
        # Read even if its writer gave up waiting (cancelled): no "exception never retrieved" noise.
        job.outcome.add_done_callback(lambda f: f.cancelled() or f.exception())
        writer.queue.append(job)
        if writer.drainer is None or writer.drainer.done():
            writer.drainer = asyncio.create_task(self._drain_sqlite_writes(writer))
        try:
            async with asyncio.timeout(self.limits.pool_wait):
                await asyncio.wait([job.outcome])  # neither raises its outcome nor cancels it
        except TimeoutError:
            if not job.taken:  # still queued: it never ran, and never will
                writer.queue.remove(job)
                self.errors += 1
                raise DatabaseUnavailable("waited too long for the SQLite writer's turn") from None
        # Taken: it runs to its end in the writer's thread; its outcome is known only then.
        try:
            result = await asyncio.shield(job.outcome)
        except BaseException as exc:
            self._count(exc)
            raise
        _count_commit()
        return result

    async def _drain_sqlite_writes(self, writer: _SqliteWriter) -> None:
        while writer.queue:
            try:
                async with self._write_turn():
                    batch = writer.queue[:_SqliteWriter.BATCH]
                    del writer.queue[:_SqliteWriter.BATCH]
                    for job in batch:
                        job.taken = True
                    try:
                        outcomes = await asyncio.get_running_loop().run_in_executor(
                            writer.thread, writer.transaction, [job.work for job in batch])
                    except asyncio.CancelledError:
                        # Shutting down while the thread runs the batch: it may yet commit. Say so, never "not saved".
                        for job in batch:
                            if not job.outcome.done():
                                job.outcome.set_exception(CommitUnknown("the SQLite writer stopped during a write"))
                        raise
                    except Exception as exc:  # the transaction itself failed (BEGIN or COMMIT): none saved
                        outcomes = [exc] * len(batch)
            except DatabaseUnavailable:
                continue  # the turn did not come: the queued writes time out on their own bound
            for job, outcome in zip(batch, outcomes, strict=True):
                if job.outcome.done():
                    continue
                if isinstance(outcome, BaseException):
                    job.outcome.set_exception(outcome)
                else:
                    job.outcome.set_result(outcome.value)

    async def settle(self, unknown: CommitUnknown) -> None:
        """Make an unknown outcome final before it is looked up: end the PostgreSQL server process that had the
        write, if it is still there. A statement or COMMIT still on its way (held by the network past our
        timeout) could otherwise run after a lookup had said "not saved". Ending the process rolls back what it
        runs and closes its socket, so what was not saved by now never will be. Raises while the server cannot
        be reached (the caller asks again later)."""
        if unknown.server is None or self.is_sqlite:
            return
        pid, after = unknown.server
        # The pid and a start before the failure: a later process given the same pid is left alone.
        same = "FROM pg_stat_activity WHERE pid = :pid AND backend_start < to_timestamp(:after)"
        params = {"pid": pid, "after": after}
        try:
            async with self._reader.connect() as connection:
                await connection.execute(text(f"SELECT pg_terminate_backend(pid, 2000) {same}"), params)
                left = (await connection.execute(text(f"SELECT count(*) {same}"), params)).scalar_one()
        except Exception as exc:
            if is_unavailable(exc):
                raise
            # Not allowed to end it (another role's server process): the outcome is looked up as it stands.
            log.warning("could not end server process %s to settle an unknown commit: %s", pid, exc)
            return
        if left:
            raise DatabaseUnavailable(f"server process {pid} has not ended yet")

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
        if self._sqlite_reader is not None:
            self._sqlite_reader.close()
            self._sqlite_reader = None


class Coalesced(Generic[K, V, R]):
    """One kind of single-row write that can be made many rows at a time: those that arrive while earlier ones
    are being written go together, `most` rows to one statement, at most `lanes` statements (pooled
    connections) at once. A campaign's thousand new followers at once are a handful of statements, not a
    thousand: each row costs a statement's client-side work (SQLAlchemy, the driver, a pooled connection's
    checkout) that the server's side of a row is a fraction of. Nothing waits for a batch to fill: an idle
    lane takes what is there, so a lone write goes at once.

    `write_many(connection, {key: value})` runs one statement (its own transaction: `write_at_once(one_statement=
    True)`) and returns what each key got (a key left out: None). Keys go in sorted order, so two batches lock
    the same rows in the same order. A key written again before its batch goes keeps the later value
    (`merge` decides) and both callers get its row. When the statement fails, every caller of its batch gets
    the error; a commit counts (`count_commits`) in each caller's task, as its own write would have."""

    def __init__(self, db: Database, write_many: Callable[[Connection, dict[K, V]], dict[K, R]], *,
                 most: int = 200, lanes: int = 4, merge: Callable[[V, V], V] = lambda _old, new: new) -> None:
        self.db = db
        self.write_many = write_many
        self.most = most
        self.lanes = lanes
        self.merge = merge
        self._waiting: dict[K, tuple[V, list[asyncio.Future]]] = {}
        self._busy = 0

    async def write(self, key: K, value: V) -> R | None:
        future = asyncio.get_running_loop().create_future()
        # A caller that gave up (cancelled) leaves its row to be written all the same; nobody reads the outcome.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        known = self._waiting.get(key)
        if known is None:
            self._waiting[key] = (value, [future])
        else:
            self._waiting[key] = (self.merge(known[0], value), [*known[1], future])
        if self._busy < self.lanes:
            self._busy += 1
            # A context of its own: the commit is counted in each caller's task, not in the one that started it.
            asyncio.get_running_loop().create_task(self._drain(), context=contextvars.Context())
        result = await future
        _count_commit()
        return result

    async def _drain(self) -> None:
        try:
            while self._waiting:
                keys = sorted(itertools.islice(self._waiting, self.most))  # the oldest first, then in key order
                batch = {key: self._waiting.pop(key) for key in keys}
                values = {key: value for key, (value, _) in batch.items()}
                try:
                    got = await self.db.write_at_once(lambda c, v=values: self.write_many(c, v), one_statement=True)
                except BaseException as exc:
                    for future in (f for _, futures in batch.values() for f in futures if not f.done()):
                        future.set_exception(exc) if isinstance(exc, Exception) else future.cancel()
                    if not isinstance(exc, Exception):
                        raise  # cancelled (shutdown): its callers were told; any still waiting go with the next write
                    continue
                for key, (_, futures) in batch.items():
                    for future in (f for f in futures if not f.done()):
                        future.set_result(got.get(key))
        finally:
            self._busy -= 1


@dataclass(eq=False)
class _Job:
    work: Callable[[Connection], Any]
    outcome: asyncio.Future
    taken: bool = False


@dataclass(frozen=True)
class _Done:
    value: Any


def _sync_sqlite_engine(url: str, *, pool_size: int = 5) -> Engine:
    """A synchronous engine on the database's SQLite file, its transactions as `Database`'s own (WAL, explicit
    BEGIN), for threads of its own. Its pool hands a connection to one thread at a time, and closes them from
    whichever thread disposes it (SQLAlchemy's own choice for a file: sqlite3's same-thread check off)."""
    engine = create_engine(url.replace("+aiosqlite", ""), hide_parameters=True, pool_size=pool_size,
                           connect_args={"timeout": 30, "check_same_thread": False})
    _make_sqlite_transactions_explicit(engine)
    return engine


class _SqliteWriter:
    """A synchronous engine on the same SQLite file and the one thread that uses it (sqlite3 connections stay in
    the thread that made them), for `Database.write_at_once`, with the writes waiting for it."""

    BATCH = 64  # writes per transaction at most: a batch holds the one writer's turn for all of them

    def __init__(self, url: str) -> None:
        self.engine = _sync_sqlite_engine(url)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self.queue: list[_Job] = []
        self.drainer: asyncio.Task | None = None

    def transaction(self, works: list[Callable[[Connection], Any]]) -> list[_Done | BaseException]:
        """Run each in a savepoint of one transaction; what each returned (in _Done) or raised. Raises if the
        transaction itself fails, and then nothing was saved."""
        outcomes: list[_Done | BaseException] = []
        with self.engine.connect() as connection:
            connection = connection.execution_options(steward_write=True)
            transaction = connection.begin()
            try:
                if len(works) == 1:  # no savepoint needed: the transaction is the one write's
                    try:
                        outcomes.append(_Done(works[0](connection)))
                    except Exception as exc:
                        transaction.rollback()
                        return [exc]
                    transaction.commit()
                    return outcomes
                for work in works:
                    savepoint = connection.begin_nested()
                    try:
                        outcomes.append(_Done(work(connection)))
                    except Exception as exc:
                        savepoint.rollback()
                        outcomes.append(exc)
                    else:
                        savepoint.commit()
                transaction.commit()
            except BaseException:
                transaction.rollback()
                raise
        return outcomes

    def close(self) -> None:
        self.thread.shutdown(wait=True)
        self.engine.dispose()


class _SqliteReader:
    """A synchronous engine on the same SQLite file and a few threads to read through it (`Database.rows`): a
    read is one hop there and back. In WAL mode readers never wait for the writer; sqlite3 lets the other
    threads run while a statement steps. A connection is used by one thread at a time (the pool hands it out)."""

    THREADS = 4

    def __init__(self, url: str) -> None:
        self.engine = _sync_sqlite_engine(url, pool_size=self.THREADS)
        _refuse_writes_when_reading(self.engine)
        self.threads = ThreadPoolExecutor(max_workers=self.THREADS, thread_name_prefix="sqlite-reader")

    def rows(self, statement: Any, params: dict[str, Any]) -> list[Any]:
        with self.engine.connect() as connection:
            return list(connection.execution_options(steward_read=True).execute(statement, params).all())

    def close(self) -> None:
        self.threads.shutdown(wait=True)
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
        # TooManyConnectionsError: the server is at max_connections (a freeze leaves the hung connections open on
        # its side while the pools open new ones): it did not answer this step, as surely as a timeout.
        if name in ("QueryCanceledError", "ConnectionDoesNotExistError", "InterfaceError", "CannotConnectNowError",
                    "ConnectionFailureError", "AdminShutdownError", "InternalClientError", "TooManyConnectionsError"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _server_of(connection: AsyncConnection) -> tuple[int, float] | None:
    """The PostgreSQL server process behind a checked-out connection, and a time after it started: no round trip
    (asyncpg learnt the pid when it connected)."""
    try:
        return connection.sync_connection.connection.driver_connection.get_server_pid(), time.time()
    except Exception:  # not asyncpg, or no longer connected
        return None


async def _never_again(connection: AsyncConnection) -> None:
    """A connection whose last statement went unanswered is closed, never handed out again: its server process
    may be ended to settle that statement (`Database.settle`)."""
    with contextlib.suppress(Exception):
        await connection.invalidate()


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


def _refuse_writes_when_reading(engine: AsyncEngine | Engine) -> None:
    engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(engine, "before_cursor_execute")
    def _check(conn, _cursor, statement: str, _parameters, _context, _executemany) -> None:
        options = conn.get_execution_options()
        if options.get("steward_one_statement"):
            # Each statement would be a transaction of its own: a second one would not be undone with the first.
            info = conn.connection.info
            info["steward_statements"] = info.get("steward_statements", 0) + 1
            if info["steward_statements"] > 1:
                raise RuntimeError("write_at_once(one_statement=True) ran a second statement")
        if options.get("steward_read") and not statement.lstrip()[:7].upper().startswith(
                READ_STATEMENTS):
            # Without a transaction it would be committed at once: a read session's change must never be.
            raise ReadOnlySession(f"a read session tried to write: {statement.split(None, 1)[0]}")
