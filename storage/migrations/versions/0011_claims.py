"""claims: bindings awaiting staff verification (绑定核实), and each resident's points code (积分码)

Revision ID: 0011_claims
Revises: 0001_base
The roster entry a claim names is a plain integer (no foreign key to 0003_org's roster), and the points code
has its own table rather than a column of 0005_points' accounts, so this revision depends on the base only.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011_claims"
down_revision = "0001_base"
branch_labels = None
depends_on = None

UTC = sqlmodel.sql.sqltypes.UTCDateTime
Str = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "binding_claim",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resident_id", sa.Integer(), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("building_id", sa.Integer(), nullable=False),
        sa.Column("room", Str(length=16), nullable=False),
        sa.Column("name", Str(length=32), nullable=False),
        sa.Column("phone", Str(length=20), nullable=False),
        sa.Column("roster_id", sa.Integer(), nullable=True),
        sa.Column("holder_id", sa.Integer(), nullable=True),
        sa.Column("status", Str(length=16), nullable=False),
        sa.Column("created_at", UTC(), nullable=False),
        sa.Column("decided_at", UTC(), nullable=True),
        sa.Column("decided_by", Str(length=64), nullable=True),
        sa.ForeignKeyConstraint(["resident_id"], ["resident.id"]),
        sa.ForeignKeyConstraint(["community_id"], ["community.id"]),
        sa.ForeignKeyConstraint(["building_id"], ["building.id"]),
        sa.ForeignKeyConstraint(["holder_id"], ["resident.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_binding_claim_resident_id", "binding_claim", ["resident_id"], unique=False)
    op.create_index("ix_binding_claim_community_id", "binding_claim", ["community_id"], unique=False)
    op.create_index("ix_binding_claim_phone", "binding_claim", ["phone"], unique=False)
    op.create_index("ix_binding_claim_status", "binding_claim", ["status"], unique=False)

    op.create_table(
        "points_share_code",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resident_id", sa.Integer(), nullable=False),
        sa.Column("code", Str(length=8), nullable=False),
        sa.Column("created_at", UTC(), nullable=False),
        sa.ForeignKeyConstraint(["resident_id"], ["resident.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("resident_id"),
        sa.UniqueConstraint("code"),
    )


def downgrade() -> None:
    op.drop_table("points_share_code")
    op.drop_table("binding_claim")
