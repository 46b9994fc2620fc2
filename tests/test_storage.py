"""The storage base on SQLite and PostgreSQL: migrations, residents' last contact, write transactions."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import bindparam, event, insert, inspect
from sqlmodel import col, select

from storage import migrate
from storage.db import Database, ReadOnlySession
from storage.residents import (
    CONTACT_REFRESH,
    Resident,
    ResidentDirectory,
    ResidentSnapshot,
    find_resident,
    touch_resident,
)


async def test_migrations_bring_a_fresh_database_to_every_head(db):
    assert await migrate.is_current(db)

    def tables(sync_conn) -> set[str]:
        return set(inspect(sync_conn).get_table_names())

    async with db.engine.connect() as conn:
        names = await conn.run_sync(tables)
    assert {"resident", "alembic_version"} <= names
    await migrate.upgrade(db)  # running it again changes nothing
    assert await migrate.is_current(db)


async def test_an_empty_sqlite_file_is_behind_until_upgraded(tmp_path):
    fresh = Database(f"sqlite+aiosqlite:///{tmp_path}/fresh.db")
    try:
        assert not await migrate.is_current(fresh)
        await migrate.upgrade(fresh)
        assert await migrate.is_current(fresh)
    finally:
        await fresh.dispose()


async def test_first_contact_creates_the_resident_and_opens_the_window(db, clock):
    assert await find_resident(db, "o_first") is None
    resident = await touch_resident(db, "o_first", clock.now())
    assert resident.id is not None
    stored = await find_resident(db, "o_first")
    assert stored.last_contact_at == clock.now()
    assert stored.created_at == clock.now()
    assert stored.subscribed and not stored.is_bound


async def test_last_contact_is_refreshed_at_most_once_a_minute(db, clock):
    first = clock.now()
    await touch_resident(db, "o_chatty", first)
    clock.advance(seconds=30)
    await touch_resident(db, "o_chatty", clock.now())
    assert (await find_resident(db, "o_chatty")).last_contact_at == first  # no write within the minute
    clock.advance(seconds=31)
    later = clock.now()
    assert later - first > CONTACT_REFRESH
    returned = await touch_resident(db, "o_chatty", later)
    assert returned.last_contact_at == later
    assert (await find_resident(db, "o_chatty")).last_contact_at == later


async def test_a_write_that_fails_halfway_leaves_nothing_behind(db, clock):
    with pytest.raises(RuntimeError):
        async with db.write() as s:
            s.add(Resident(openid="o_half", created_at=clock.now()))
            await s.flush()
            raise RuntimeError("the second half failed")
    assert await find_resident(db, "o_half") is None
    async with db.write() as s:
        s.add(Resident(openid="o_whole", created_at=clock.now()))
    assert await find_resident(db, "o_whole") is not None


async def test_the_unique_openid_is_enforced_and_the_failed_write_is_rolled_back(db, clock):
    await touch_resident(db, "o_unique", clock.now())
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        async with db.write() as s:
            s.add(Resident(openid="o_other", created_at=clock.now()))
            s.add(Resident(openid="o_unique", created_at=clock.now()))
    assert await find_resident(db, "o_other") is None


async def test_concurrent_writers_do_not_lose_updates(db, clock):
    await touch_resident(db, "o_counter", clock.now())

    async def bump(i: int) -> None:
        async with db.write() as s:
            query = select(Resident).where(Resident.openid == "o_counter")
            if not db.is_sqlite:
                query = query.with_for_update()
            row = (await s.exec(query)).one()
            row.room = str(int(row.room or 0) + 1)
            s.add(row)

    await asyncio.gather(*(bump(i) for i in range(10)))
    assert (await find_resident(db, "o_counter")).room == "10"


async def test_datetimes_come_back_timezone_aware(db, clock):
    await touch_resident(db, "o_tz", clock.now())
    stored = await find_resident(db, "o_tz")
    assert stored.last_contact_at.tzinfo is not None
    assert stored.last_contact_at.astimezone(dt.UTC) == clock.now().astimezone(dt.UTC)


async def test_ping_answers_for_a_working_database(db):
    assert await db.ping()


async def test_a_resident_whose_cached_copy_is_gone_is_written_only_when_their_contact_is_due(db, kv, clock):
    from storage.residents import ResidentDirectory

    directory = ResidentDirectory(db, kv)
    first = clock.now()
    made = await directory.touch("o_regular", first)
    assert made._first_contact
    await kv.delete(directory.key("o_regular"))  # expired, or dropped by a change elsewhere
    clock.advance(seconds=30)
    seen = await directory.touch("o_regular", clock.now())
    assert (seen.id, seen.last_contact_at, seen._first_contact) == (made.id, first, False)  # fresh: not written
    assert (await find_resident(db, "o_regular")).last_contact_at == first
    await kv.delete(directory.key("o_regular"))
    clock.advance(seconds=31)
    seen = await directory.touch("o_regular", clock.now())
    assert (seen.id, seen.last_contact_at, seen._first_contact) == (made.id, clock.now(), False)  # due: written
    assert (await find_resident(db, "o_regular")).last_contact_at == clock.now()


async def test_a_resident_imported_before_following_is_subscribed_once_they_write(db, kv, clock):
    from storage.residents import ResidentDirectory

    imported = clock.now() - dt.timedelta(days=3)
    async with db.write() as s:
        s.add(Resident(openid="o_imported", name="王芳", created_at=imported, subscribed=False))
    directory = ResidentDirectory(db, kv)
    assert (await directory.get("o_imported")).subscribed is False

    now = clock.now()
    seen = await directory.touch("o_imported", now)

    assert seen.subscribed is True and seen.last_contact_at == now
    assert not seen._first_contact  # the row was there: not made by this message
    stored = await find_resident(db, "o_imported")
    assert (stored.subscribed, stored.name, stored.created_at) == (True, "王芳", imported)


async def test_a_read_session_refuses_to_write_and_nothing_is_saved(db, clock):
    # Read sessions run without a transaction (no BEGIN/ROLLBACK round trips): a write slipped into one would
    # be committed at once, so it is refused instead — an INSERT as much as an autoflush of a changed object.
    await touch_resident(db, "o_reader", clock.now())
    with pytest.raises(ReadOnlySession):
        async with db.read() as s:
            s.add(Resident(openid="o_sneaky", created_at=clock.now()))
            await s.flush()
    with pytest.raises(ReadOnlySession):
        async with db.read() as s:
            row = (await s.exec(select(Resident).where(Resident.openid == "o_reader"))).one()
            row.name = "改了"
            await s.exec(select(Resident))  # autoflush first
    assert await find_resident(db, "o_sneaky") is None
    assert (await find_resident(db, "o_reader")).name is None


async def test_rows_reads_what_was_committed_and_refuses_to_write(db, clock):
    # db.rows, the hot path's reads (on SQLite a thread and an engine of their own): same rules as a read session.
    await touch_resident(db, "o_rows", clock.now())
    by_openid = select(Resident.id, Resident.openid).where(Resident.openid == bindparam("openid"))
    assert [r.openid for r in await db.rows(by_openid, {"openid": "o_rows"})] == ["o_rows"]
    await touch_resident(db, "o_rows_later", clock.now())
    assert len(await db.rows(by_openid, {"openid": "o_rows_later"})) == 1  # a commit made after the first read
    with pytest.raises(ReadOnlySession):
        await db.rows(insert(Resident.__table__).values(openid="o_sneaky", created_at=clock.now()))
    assert await find_resident(db, "o_sneaky") is None


async def test_a_read_sees_what_a_write_committed_meanwhile(db, clock):
    # Each statement of a read session sees the latest commit (READ COMMITTED, as PostgreSQL gives by default).
    await touch_resident(db, "o_a", clock.now())
    async with db.read() as s:
        first = len((await s.exec(select(Resident))).all())
        await touch_resident(db, "o_b", clock.now())
        second = len((await s.exec(select(Resident))).all())
    assert (first, second) == (1, 2)


async def test_a_first_contact_reads_once_writes_once_and_holds_no_roles(db, kv, clock):
    # A campaign's thousand new followers at once: each first message costs one statement (the cache missed, and
    # the upsert returns the row), and no read of role grants — nothing can refer to a row made by this message.
    from sqlalchemy import Engine

    directory = ResidentDirectory(db, kv)
    statements: list[str] = []
    listen = lambda _c, _cur, statement, *_a: statements.append(statement.split()[0].upper())  # noqa: E731
    event.listen(Engine, "before_cursor_execute", listen)  # every engine: SQLite's writer has its own
    try:
        first = await directory.touch("o_new_follower", clock.now())
    finally:
        event.remove(Engine, "before_cursor_execute", listen)
    assert first._first_contact and first.id is not None
    # One upsert, which reads the row too (on SQLite the one writer looks first, in the same hop).
    expected = ["SELECT", "INSERT"] if db.is_sqlite else ["INSERT"]
    assert [s for s in statements if s in ("SELECT", "INSERT", "UPDATE")] == expected
    again = await directory.touch("o_new_follower", clock.now())
    assert not again._first_contact  # the cached copy never says so


async def test_new_followers_at_once_each_get_their_own_row_in_a_few_statements(db, kv, clock):
    # A campaign's new followers all write at once: on PostgreSQL the contacts waiting at one moment go in one
    # statement each batch (on SQLite each is a statement of the writer's one queued transaction).
    from sqlalchemy import Engine

    directory = ResidentDirectory(db, kv)
    openids = [f"o_campaign_{i:04d}" for i in range(300)]
    inserts: list[str] = []
    listen = lambda _c, _cur, statement, *_a: inserts.append(statement) if statement.startswith("INSERT") else None  # noqa: E731
    event.listen(Engine, "before_cursor_execute", listen)
    try:
        got = await asyncio.gather(*(directory.touch(o, clock.now()) for o in openids))
    finally:
        event.remove(Engine, "before_cursor_execute", listen)
    assert [r.openid for r in got] == openids and all(r._first_contact for r in got)
    async with db.read() as s:
        rows = (await s.exec(select(Resident.id, Resident.openid).where(col(Resident.openid).startswith("o_campaign_"))
                             )).all()
    assert sorted(o for _, o in rows) == openids  # each once
    assert {r.id for r in got} == {i for i, _ in rows}  # each told its own row's id
    if db.is_sqlite:
        assert len(inserts) == 300
    else:
        assert len(inserts) <= 60  # those waiting together went together: not a statement each
    clock.advance(seconds=5)
    again = await asyncio.gather(*(directory.touch(o, clock.now()) for o in openids[:10]))
    assert not any(r._first_contact for r in again)


async def test_coalesced_writes_go_together_fail_together_and_count_a_commit_in_each_callers_task(db):
    from storage.db import Coalesced, count_commits

    batches: list[dict[str, int]] = []

    def write_many(_connection, values: dict[str, int]) -> dict[str, str]:
        batches.append(dict(values))
        if "bad" in values:
            raise RuntimeError("the statement failed")
        return {key: f"{key}={value}" for key, value in values.items() if key != "skipped"}

    coalesced = Coalesced(db, write_many, most=3, lanes=1, merge=max)

    async def caller(key: str, value: int) -> tuple[str | None, list[int]]:
        commits = count_commits()
        return await coalesced.write(key, value), commits

    got = await asyncio.gather(caller("b", 1), caller("a", 1), caller("a", 7), caller("c", 2), caller("d", 3),
                               caller("skipped", 0))
    # One lane, which starts once every caller has queued: the oldest three keys, in key order (a key written
    # twice with the larger value), then the rest.
    assert batches == [{"a": 7, "b": 1, "c": 2}, {"d": 3, "skipped": 0}]
    assert [list(b) for b in batches] == [sorted(b) for b in batches]
    assert [r for r, _ in got] == ["b=1", "a=7", "a=7", "c=2", "d=3", None]
    assert all(commits == [1] for _, commits in got)  # each caller's own task counted the commit it waited for

    batches.clear()
    assert (await caller("x", 1))[0] == "x=1"  # a lone write goes at once
    failed = await asyncio.gather(caller("bad", 1), caller("y", 1), return_exceptions=True)
    assert batches == [{"x": 1}, {"bad": 1, "y": 1}]
    assert all(isinstance(f, RuntimeError) for f in failed)  # everyone in the failed batch is told


async def test_a_write_at_once_commits_rolls_back_whole_counts_its_commit_and_takes_turns_with_other_writers(db):
    from sqlalchemy import insert as core_insert

    from storage.db import count_commits

    table = Resident.__table__
    now = dt.datetime(2026, 11, 27, 9, 30, tzinfo=dt.UTC)

    def add(openid: str, fail: bool = False):
        def work(connection):
            connection.execute(core_insert(table).values(openid=openid, created_at=now, subscribed=True,
                                                         notify_consultation=True))
            if fail:
                raise RuntimeError("after the insert")
            return openid
        return work

    commits = count_commits()
    assert await db.write_at_once(add("o_once")) == "o_once"
    assert commits == [1]
    with pytest.raises(RuntimeError):
        await db.write_at_once(add("o_half", fail=True))
    assert commits == [1]
    assert await find_resident(db, "o_half") is None  # rolled back whole

    async def ordinary(i: int) -> None:
        async with db.write() as s:
            s.add(Resident(openid=f"o_orm{i}", created_at=now))

    # Both kinds of writer at once: none fails on SQLite's lock, every row is there.
    await asyncio.gather(*(db.write_at_once(add(f"o_at{i}")) for i in range(15)), *(ordinary(i) for i in range(15)))
    async with db.read() as s:
        openids = set((await s.exec(select(Resident.openid))).all())
    assert openids == {f"o_at{i}" for i in range(15)} | {f"o_orm{i}" for i in range(15)} | {"o_once"}
    assert commits == [31]


async def test_a_row_copied_with_the_lock_goes_with_its_release_unless_a_commit_changed_it_first(db, kv, clock):
    # A first (or due) contact's copy of the row is written as the resident's lock goes, in its round trip. A
    # commit changing the row before then (a binding finished by the same message) takes the copy back: the
    # release must not put the old row back after the commit dropped it.
    directory = ResidentDirectory(db, kv)
    key = directory.key("o_copied")
    async with kv.lock("resident:o_copied", read=[key]) as held:
        made = await directory.touch("o_copied", clock.now(), held)
        assert made._first_contact and await kv.get(key) is None  # not yet: with the release
        await held.release()
    assert ResidentSnapshot.from_json(await kv.get(key)).id == made.id

    await kv.delete(key)
    clock.advance(seconds=61)  # the contact is due again: written, and copied with the lock
    async with kv.lock("resident:o_copied", read=[key]) as held:
        await directory.touch("o_copied", clock.now(), held)
        async with db.write() as s:
            row = (await s.exec(select(Resident).where(Resident.openid == "o_copied"))).one()
            row.name = "王芳"
        await held.release()
    assert await kv.get(key) is None  # dropped, not the copy from before the name
    assert (await directory.get("o_copied")).name == "王芳"

    async with kv.lock("resident:o_failed", read=[directory.key("o_failed")]) as held:
        await directory.touch("o_failed", clock.now(), held)  # the step then fails: the block ends unreleased
    assert ResidentSnapshot.from_json(await kv.get(directory.key("o_failed"))).openid == "o_failed"
