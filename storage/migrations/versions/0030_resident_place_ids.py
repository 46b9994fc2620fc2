"""A place's residents in id order, for a broadcast's batches (storage/broadcast.py)

Revision ID: 0030_resident_place_ids
Revises: 0001_base
`ix_resident_community_ids` (community_id, id) and `ix_resident_building_ids` (building_id, id) replace the
one-column indexes on community_id and building_id (every query those served, these serve). A broadcast writes
its audience in batches from a cursor: "this community's residents after id N, in id order, the next 500". With
only (community_id), each batch read every resident of the community and sorted them: 22 ms a batch for a
community of 100,000 on PostgreSQL, so the whole broadcast grew with the square of its audience. Now each batch
reads its 500 index entries from the cursor on.
"""

from alembic import op

revision = "0030_resident_place_ids"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_resident_community_ids", "resident", ["community_id", "id"], unique=False)
    op.create_index("ix_resident_building_ids", "resident", ["building_id", "id"], unique=False)
    op.drop_index("ix_resident_community_id", table_name="resident")
    op.drop_index("ix_resident_building_id", table_name="resident")


def downgrade() -> None:
    op.create_index("ix_resident_community_id", "resident", ["community_id"], unique=False)
    op.create_index("ix_resident_building_id", "resident", ["building_id"], unique=False)
    op.drop_index("ix_resident_community_ids", table_name="resident")
    op.drop_index("ix_resident_building_ids", table_name="resident")
