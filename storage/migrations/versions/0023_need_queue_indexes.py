"""Staff queues and the 督办 scan on a large district (bench/scale.py)

Revision ID: 0023_need_queue_indexes
Revises: 0001_base
Depends on: 0002_needs (the need table)
`ix_need_assigned`: assignee_id, only where it is set. Most needs have no assignee, so the full index told
SQLite's planner that `assignee_id = ?` matches half the table; every staff view that includes "or assigned to
me" (storage.needs.queries.seen_by) then read the deadline indexes instead of the community's rows: 今日 took
0.5–0.9 s on 200,000 needs. The partial index counts only the assigned rows.
`ix_need_chased_at`: the report_to_district scan (chased, still open) in chased_at order, without reading every
need past its deadline (185 ms on 200,000).
"""

import sqlalchemy as sa
from alembic import op

revision = "0023_need_queue_indexes"
down_revision = "0001_base"
branch_labels = None
depends_on = "0002_needs"

ASSIGNED = sa.text("assignee_id IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_need_assigned", "need", ["assignee_id"], unique=False, sqlite_where=ASSIGNED,
                    postgresql_where=ASSIGNED)
    op.create_index("ix_need_chased_at", "need", ["chased_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_need_chased_at", table_name="need")
    op.drop_index("ix_need_assigned", table_name="need")
