"""The district's overdue needs, newest first, on a large district (bench/scale.py)

Revision ID: 0026_need_open_created_index
Revises: 0001_base
Depends on: 0025_need_scope_order_indexes
`ix_need_open_created`: the open needs by date and id (the ledger's whole order, so neither database sorts what it
walks; SQLite chose another index when the id was not there), with their deadlines in the index.
The district admin's 台账 ?overdue=1 (open, past a deadline, newest first) walked the district's newest needs,
which are not late yet, fetching each row to read its deadlines: ~80,000 rows, 130-200 ms on 1,000,000 needs.
This index holds what the filter reads, so the walk reads the index alone. Its predicate is the open statuses
written out (storage.needs.model.OPEN_SQL, which the queries use word for word): a bound list of statuses could
not be matched to it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0026_need_open_created_index"
down_revision = "0001_base"
branch_labels = None
depends_on = "0025_need_scope_order_indexes"

OPEN = sa.text("status IN ('assigned', 'escalated', 'in_progress', 'reopened', 'reported', 'supervised', 'triaged')")


def upgrade() -> None:
    op.create_index("ix_need_open_created", "need", ["created_at", "id", "resolve_by", "respond_by", "responded_at"],
                    unique=False, sqlite_where=OPEN, postgresql_where=OPEN)


def downgrade() -> None:
    op.drop_index("ix_need_open_created", table_name="need")
