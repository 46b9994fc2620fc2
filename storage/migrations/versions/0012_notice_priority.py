"""notice priority: urgent notices are claimed first and ignore quiet hours (storage/outbox.NoticePriority)

Revision ID: 0012_notice_priority
Revises: 0001_base
Rows queued before this revision become normal (1). The claim index lets a sender take due rows by priority
without sorting every due row.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_notice_priority"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), server_default="1", nullable=False))
        batch_op.create_index("ix_outbox_claim", ["status", "priority", "next_attempt_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_claim")
        batch_op.drop_column("priority")
