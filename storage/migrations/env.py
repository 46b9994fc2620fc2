"""Alembic environment. Migrations run on a connection handed over by storage.migrate (async engines)."""

from alembic import context

from storage.tables import metadata

config = context.config
connection = config.attributes.get("connection")


def run_with(conn) -> None:
    context.configure(
        connection=conn,
        target_metadata=metadata,
        render_as_batch=conn.dialect.name == "sqlite",  # SQLite needs batch mode to alter tables
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run_with(connection)
else:
    # Offline use by a developer (e.g. `alembic revision --autogenerate` with a sync sqlite URL).
    from sqlalchemy import create_engine

    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///autogen.db")
    with engine.connect() as conn:
        run_with(conn)
