"""menu tags: residents whose WeChat user tag (which custom menu they see) must follow a role grant or revoke

Revision ID: 0016_menu_tags
Revises: 0001_base
Only the resident table (0001_base) is referred to.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0016_menu_tags"
down_revision = "0001_base"
branch_labels = None
depends_on = None

UTC = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "wechat_tag_sync",
        sa.Column("resident_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("queued_at", UTC(), nullable=False),
        sa.ForeignKeyConstraint(["resident_id"], ["resident.id"]),
        sa.PrimaryKeyConstraint("resident_id"),
    )


def downgrade() -> None:
    op.drop_table("wechat_tag_sync")
