"""the district's assessment: indicator values district staff enter per community and year

Revision ID: 0022_assess
Revises: 0001_base
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0022_assess"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('indicator_value',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('community_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('indicator', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('entered_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('entered_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['community_id'], ['community.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('community_id', 'year', 'indicator', name='uq_indicator_value')
    )
    op.create_index(op.f('ix_indicator_value_community_id'), 'indicator_value', ['community_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_indicator_value_community_id'), table_name='indicator_value')
    op.drop_table('indicator_value')
