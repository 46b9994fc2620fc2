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
