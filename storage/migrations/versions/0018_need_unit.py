"""needs assigned to a unit: `need.unit_id`, the property company or other unit (a department whose kind is not
"district") that handles the need; its members handle and see it (storage/policy.py)

Revision ID: 0018_need_unit
Revises: 0001_base
Depends on: 0002_needs (the need table)
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_need_unit"
down_revision = "0001_base"
branch_labels = None
depends_on = "0002_needs"


def upgrade() -> None:
    with op.batch_alter_table("need", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unit_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_need_unit_id"), ["unit_id"], unique=False)
        batch_op.create_foreign_key("fk_need_unit_id_department", "department", ["unit_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("need", schema=None) as batch_op:
        batch_op.drop_constraint("fk_need_unit_id_department", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_need_unit_id"))
        batch_op.drop_column("unit_id")
