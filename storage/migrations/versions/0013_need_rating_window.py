"""needs' rating window: the scan that closes unrated needs (storage/needs.close_unrated) reads one index range

Revision ID: 0013_need_rating_window
Revises: 0001_base
Depends on: 0002_needs (the need table)
`status = 'resolved' AND rate_by <= now ORDER BY rate_by LIMIT n` is one range of (status, rate_by): only the due
rows are read, in order, however many needs the district has. The index on rate_by alone served nothing else.
"""

from alembic import op

revision = "0013_need_rating_window"
down_revision = "0001_base"
branch_labels = None
depends_on = "0002_needs"


def upgrade() -> None:
    op.create_index("ix_need_status_rate_by", "need", ["status", "rate_by"], unique=False)
    op.drop_index("ix_need_rate_by", table_name="need")


def downgrade() -> None:
    op.create_index("ix_need_rate_by", "need", ["rate_by"], unique=False)
    op.drop_index("ix_need_status_rate_by", table_name="need")
