"""Every table module, imported once so SQLModel.metadata is complete (Alembic and tests use it)."""

from sqlmodel import SQLModel

from storage import (  # noqa: F401
    activities,
    assess,
    broadcast,
    claims,
    classifier,
    console_auth,
    consultation,
    consultation_tables,
    need_clocks,
    needs,
    org,
    outbox,
    points,
    projects,
    residents,
    review,
    rewards,
    roles,
    survey,
    tag_sync,
)

metadata = SQLModel.metadata
