"""A follower's needs in id order from the index alone (bench/flow.py)

Revision ID: 0027_need_follower_resident
Revises: 0001_base
Depends on: 0026_need_open_created_index
`ix_need_follower_resident_need` (resident_id, need_id) replaces `ix_need_follower_resident_id`: 进度 (at the end
of every report) lists the needs someone follows in id order, and a building leader filing for residents follows
hundreds. With only (resident_id), PostgreSQL planned the list as a merge join along the whole need table's
primary key once the tables had statistics: 14.6 ms a list on average, 4 in 5 of the server's CPU in a
two-worker run of 6,500 needs, growing with the table. With the pair, the follower's rows come in order and each
need is one primary-key look-up.
"""

from alembic import op

revision = "0027_need_follower_resident"
down_revision = "0001_base"
branch_labels = None
depends_on = "0026_need_open_created_index"


def upgrade() -> None:
    op.create_index("ix_need_follower_resident_need", "need_follower", ["resident_id", "need_id"], unique=False)
    op.drop_index("ix_need_follower_resident_id", table_name="need_follower")


def downgrade() -> None:
    op.create_index("ix_need_follower_resident_id", "need_follower", ["resident_id"], unique=False)
    op.drop_index("ix_need_follower_resident_need", table_name="need_follower")
