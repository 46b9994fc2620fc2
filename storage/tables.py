"""Every table module, imported once so SQLModel.metadata is complete (Alembic and tests use it)."""

from sqlmodel import SQLModel

from storage import org, outbox, residents, roles  # noqa: F401

metadata = SQLModel.metadata
