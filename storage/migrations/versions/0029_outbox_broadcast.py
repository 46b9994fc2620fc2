"""A broadcast's outbox rows found by an indexed column, not by their key's prefix (storage/broadcast.py)

Revision ID: 0029_outbox_broadcast
Revises: 0001_base
Depends on: 0012_notice_priority
`outbox.broadcast_id` and the partial index `ix_outbox_broadcast_status` (broadcast_id, status) over broadcasts'
rows only. A broadcast's progress (the scheduler asks for it every tick while one is sending), 停止广播 and a
consultation change's delivery count matched `idempotency_key LIKE 'bc:12:%'`, which neither database serves from an
index here (SQLite's LIKE ignores case; PostgreSQL's needs a "C" collation or text_pattern_ops): each read the
whole outbox, which only grows. Rows written before this revision get their broadcast from their key, in one
UPDATE over the broadcasts' rows.
"""

import sqlalchemy as sa
from alembic import op

revision = "0029_outbox_broadcast"
down_revision = "0001_base"
branch_labels = None
depends_on = "0012_notice_priority"

BROADCAST_ROWS = sa.text("broadcast_id IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("broadcast_id", sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE outbox SET broadcast_id = split_part(idempotency_key, ':', 2)::integer "
                   "WHERE idempotency_key LIKE 'bc:%'")
    else:
        op.execute("UPDATE outbox SET broadcast_id = CAST(substr(idempotency_key, 4, "
                   "instr(substr(idempotency_key, 4), ':') - 1) AS INTEGER) WHERE idempotency_key LIKE 'bc:%'")
    op.create_index("ix_outbox_broadcast_status", "outbox", ["broadcast_id", "status"], unique=False,
                    sqlite_where=BROADCAST_ROWS, postgresql_where=BROADCAST_ROWS)


def downgrade() -> None:
    op.drop_index("ix_outbox_broadcast_status", table_name="outbox")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("broadcast_id")
