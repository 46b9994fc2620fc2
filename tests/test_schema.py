"""The models and the migrations describe one schema: Alembic's autogenerate comparison of `storage.tables.metadata`
with a freshly migrated database (the `db` fixture's, on SQLite and on PostgreSQL) finds nothing to change —
tables, columns, types, nullability, server defaults, indexes, unique constraints and foreign keys."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from storage import migrate
from storage.db import Database
from storage.tables import metadata

OPTIONS = {"compare_type": True, "compare_server_default": True}


async def differences(db, target: sa.MetaData) -> list:
    def compare(sync_conn) -> list:
        return compare_metadata(MigrationContext.configure(sync_conn, opts=OPTIONS), target)

    async with db.engine.connect() as conn:
        return await conn.run_sync(compare)


async def test_the_migrated_schema_is_exactly_the_models(db):
    assert await differences(db, metadata) == []


async def test_the_comparison_sees_a_model_change(db):
    """The check above is live: a column, an index and a type the migrations do not have are all reported."""
    changed = sa.MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    need = changed.tables["need"]
    need.append_column(sa.Column("urgency", sa.Integer(), nullable=True))
    sa.Index("ix_need_text", need.c.text)
    changed.tables["need_ticket_counter"].c.last.type = sa.String(8)

    found = {(d[0], d[2], d[3]) if d[0] == "modify_type" else (d[0],) for d in _flat(await differences(db, changed))}
    assert {("add_column",), ("add_index",), ("modify_type", "need_ticket_counter", "last")} <= found


def _flat(diffs: list) -> list[tuple]:
    """Column modifications come grouped in a list; everything else is one tuple."""
    out: list[tuple] = []
    for d in diffs:
        out.extend(d if isinstance(d, list) else [d])
    return out


async def test_a_revision_standing_for_its_dependency_still_leaves_other_heads_to_apply(tmp_path):
    """0013 depends on 0002_needs, so the version table lists 0013 alone for both: the database is current only
    once every head is applied."""
    partial = Database(f"sqlite+aiosqlite:///{tmp_path}/partial.db")

    def upgrade_to(target: str):
        def run(sync_conn) -> None:
            cfg = migrate.alembic_config()
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, target)

        return run

    try:
        async with partial.engine.begin() as conn:
            await conn.run_sync(upgrade_to("0013_need_rating_window"))
        assert not await migrate.is_current(partial)
        await migrate.upgrade(partial)
        assert await migrate.is_current(partial)
        async with partial.engine.connect() as conn:
            versions = set((await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).scalars())
        assert "0013_need_rating_window" in versions and "0002_needs" not in versions
    finally:
        await partial.dispose()


async def test_outbox_rows_written_before_0029_get_their_broadcast_from_their_key(db):
    """0029_outbox_broadcast finds a broadcast's rows by a column; the rows already there take it from their key."""
    import importlib.util
    from pathlib import Path

    from alembic.operations import Operations

    from tests.factories import make_resident

    path = Path(migrate.__file__).parent / "migrations" / "versions" / "0029_outbox_broadcast.py"
    spec = importlib.util.spec_from_file_location("revision_0029", path)
    revision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(revision)
    resident = await make_resident(db, "o_before_0029")
    rows = {"bc:12:7": 12, "bc:3:7": 3, "activity:12:cancelled:7": None, "bcx:9": None}

    def before_and_after(sync_conn) -> dict[str, int | None]:
        with Operations.context(MigrationContext.configure(sync_conn)):
            revision.downgrade()
            try:
                for key in rows:
                    sync_conn.execute(sa.text(
                        "INSERT INTO outbox (idempotency_key, resident_id, kind, text, payload, status, attempts, "
                        "next_attempt_at, created_at, priority) VALUES (:key, :rid, 'broadcast', 't', '{}', 'sent', "
                        "1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)"), {"key": key, "rid": resident.id})
            finally:
                revision.upgrade()
        found = sync_conn.execute(sa.text("SELECT idempotency_key, broadcast_id FROM outbox"))
        return dict(found.all())

    async with db.engine.begin() as conn:
        assert await conn.run_sync(before_and_after) == rows
    assert await differences(db, metadata) == []  # the column and its index are back as the models have them
