"""Staff pages on a large district: each place's needs in date order (bench/scale.py)

Revision ID: 0025_need_scope_order_indexes
Revises: 0001_base
Depends on: 0023_need_queue_indexes (ix_need_assigned, replaced here)
The ledger's page (storage.needs.queries._first_in_scope) takes the first 50 of each of the actor's places (their
community, grid, building, what is assigned to them) in date order, then the first 50 of those. Each needs an
index of that place's needs by date: (community_id, created_at), (grid_id, created_at), (building_id,
created_at) and, assigned rows only, (assignee_id, created_at). They replace the single-column indexes with the
same first column, so a new need updates no more indexes than before. On 1,000,000 needs a community's overdue
page and an assignee's open page had walked ~100,000 of the district's newest needs: 160-230 ms on PostgreSQL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0025_need_scope_order_indexes"
down_revision = "0001_base"
branch_labels = None
depends_on = "0023_need_queue_indexes"

ASSIGNED = sa.text("assignee_id IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_need_community_created", "need", ["community_id", "created_at"], unique=False)
    op.create_index("ix_need_grid_created", "need", ["grid_id", "created_at"], unique=False)
    op.create_index("ix_need_building_created", "need", ["building_id", "created_at"], unique=False)
    op.create_index("ix_need_assigned_created", "need", ["assignee_id", "created_at"], unique=False,
                    sqlite_where=ASSIGNED, postgresql_where=ASSIGNED)
    op.drop_index("ix_need_community_id", table_name="need")
    op.drop_index("ix_need_grid_id", table_name="need")
    op.drop_index("ix_need_building_id", table_name="need")
    op.drop_index("ix_need_assigned", table_name="need")


def downgrade() -> None:
    op.create_index("ix_need_assigned", "need", ["assignee_id"], unique=False, sqlite_where=ASSIGNED,
                    postgresql_where=ASSIGNED)
    op.create_index("ix_need_building_id", "need", ["building_id"], unique=False)
    op.create_index("ix_need_grid_id", "need", ["grid_id"], unique=False)
    op.create_index("ix_need_community_id", "need", ["community_id"], unique=False)
    op.drop_index("ix_need_assigned_created", table_name="need")
    op.drop_index("ix_need_building_created", table_name="need")
    op.drop_index("ix_need_grid_created", table_name="need")
    op.drop_index("ix_need_community_created", table_name="need")
