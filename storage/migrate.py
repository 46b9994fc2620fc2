"""Schema migrations (Alembic) run from inside the async app: `steward db upgrade`, and `serve` on start.

Feature migrations branch from the base revision and are applied together as "heads", so features that
were built side by side need no shared ordering.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from storage.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str = "sqlite:///autogen.db") -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


async def upgrade(db: Database) -> None:
    def run(sync_conn) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, "heads")

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


async def is_current(db: Database) -> bool:
    """True when the database is at every head (nothing to upgrade).

    Every head must be applied, not necessarily listed: a revision that names another in `depends_on` takes
    its place in the version table (0013_need_rating_window stands for 0002_needs)."""
    script = ScriptDirectory.from_config(alembic_config())
    heads = set(script.get_heads())

    def current(sync_conn) -> tuple[str, ...]:
        return MigrationContext.configure(sync_conn).get_current_heads()

    async with db.engine.connect() as conn:
        at = await conn.run_sync(current)
    if not at:
        return False
    try:
        applied = {rev.revision for rev in script.iterate_revisions(at, "base")}
    except Exception:  # a revision this code does not know (a newer release migrated the database)
        return False
    return heads <= applied
