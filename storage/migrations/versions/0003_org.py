"""org: residents' opt-in to consultation notices, and the residents' roster (住户花名册)

Revision ID: 0003_org
Revises: 0001_base
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003_org"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("resident", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notify_consultation", sa.Boolean(), nullable=False, server_default=sa.true()))

    op.create_table(
        "resident_roster",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phone", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("building_id", sa.Integer(), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("room", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("resident_id", sa.Integer(), nullable=True),
        sa.Column("imported_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("linked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["building_id"], ["building.id"]),
        sa.ForeignKeyConstraint(["community_id"], ["community.id"]),
        sa.ForeignKeyConstraint(["resident_id"], ["resident.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("phone", "building_id", name="uq_roster_phone_building"),
    )
    with op.batch_alter_table("resident_roster", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_resident_roster_phone"), ["phone"], unique=False)
        batch_op.create_index(batch_op.f("ix_resident_roster_building_id"), ["building_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_resident_roster_community_id"), ["community_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_resident_roster_resident_id"), ["resident_id"], unique=False)


def downgrade() -> None:
    op.drop_table("resident_roster")
    with op.batch_alter_table("resident", schema=None) as batch_op:
        batch_op.drop_column("notify_consultation")
