"""the staff console's single-use sign-in links (sessions live in the key-value store)

Revision ID: 0020_console_auth
Revises: 0001_base
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0020_console_auth"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('console_link',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('resident_id', sa.Integer(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('used_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['resident_id'], ['resident.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index(op.f('ix_console_link_resident_id'), 'console_link', ['resident_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_console_link_resident_id'), table_name='console_link')
    op.drop_table('console_link')
