"""The rating-reminder scan on a large district (bench/scale.py)

Revision ID: 0024_need_unrated_index
Revises: 0001_base
Depends on: 0002_needs (the need table)
`ix_need_unrated`: (status, resolved_at) of the needs not rated. The scan (storage.need_clocks.unrated_query:
resolved, not rated, a day old, oldest first, 200 a run) read every resolved need and sorted them: 109-150 ms on
1,000,000 needs. With the index it reads the oldest ones in order and stops at 200. Partial on `rated_at IS NULL`
(not on the status, which the query binds as a parameter a generic plan could not match to a predicate).
"""

import sqlalchemy as sa
from alembic import op

revision = "0024_need_unrated_index"
down_revision = "0001_base"
branch_labels = None
depends_on = "0002_needs"

UNRATED = sa.text("rated_at IS NULL")


def upgrade() -> None:
    op.create_index("ix_need_unrated", "need", ["status", "resolved_at"], unique=False, sqlite_where=UNRATED,
                    postgresql_where=UNRATED)


def downgrade() -> None:
    op.drop_index("ix_need_unrated", table_name="need")
