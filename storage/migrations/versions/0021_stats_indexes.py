"""三率 statistics: the first response kept apart from the rework's, and the per-community monthly range

Revision ID: 0021_stats_indexes
Revises: 0001_base
Depends on: 0002_needs (the need table)
`first_respond_by` / `first_responded_at`: the response clock the resident's first answer was due by and when it
came (storage/needs/transitions.apply_transition); 驳回 and 合并 clear `respond_by`, a rework resets it and
`responded_at`, so the 响应率 could not be judged from those. Needs answered before this revision take their
current pair (a reworked one: its rework's answer; a rejected or merged one: no clock, so not "on time").
`ix_need_stats`: (community_id, created_at) and every other column the statistics read, so one community's
month is one range of the index and the district's year a scan of it, never of the table (storage/stats.py).
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

# Written out, not imported: a migration must not change when the model does.
STATS_COLUMNS = ("community_id", "created_at", "status", "grid_id", "category", "department_id", "respond_by",
                 "first_respond_by", "first_responded_at", "resolve_by", "resolved_at", "district_reported_at",
                 "ratings_given", "rating", "rework_count")

revision = "0021_stats_indexes"
down_revision = "0001_base"
branch_labels = None
depends_on = "0002_needs"


def upgrade() -> None:
    with op.batch_alter_table("need") as batch:
        batch.add_column(sa.Column("first_respond_by", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("first_responded_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    need = sa.table("need", sa.column("respond_by"), sa.column("responded_at"), sa.column("first_respond_by"),
                    sa.column("first_responded_at"))
    op.execute(need.update().where(need.c.responded_at.is_not(None))
               .values(first_respond_by=need.c.respond_by, first_responded_at=need.c.responded_at))
    op.create_index("ix_need_stats", "need", list(STATS_COLUMNS), unique=False)


def downgrade() -> None:
    op.drop_index("ix_need_stats", table_name="need")
    with op.batch_alter_table("need") as batch:
        batch.drop_column("first_responded_at")
        batch.drop_column("first_respond_by")
