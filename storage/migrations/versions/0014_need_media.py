"""needs' media: every photo (up to 9) and voice that came with a need, copied out of WeChat into the media store

Revision ID: 0014_need_media
Revises: 0001_base
Depends on: 0002_needs (the need table)
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0014_need_media"
down_revision = "0001_base"
branch_labels = None
depends_on = "0002_needs"


def upgrade() -> None:
    op.create_table('need_media',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('need_id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('media_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('pic_url', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('recognition', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('received_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('token', sqlmodel.sql.sqltypes.AutoString(length=48), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_try_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('stored_key', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
    sa.Column('content_type', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('size', sa.Integer(), nullable=True),
    sa.Column('stored_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.ForeignKeyConstraint(['need_id'], ['need.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token')
    )
    op.create_index(op.f('ix_need_media_need_id'), 'need_media', ['need_id'], unique=False)
    op.create_index('ix_need_media_status_next_try_at', 'need_media', ['status', 'next_try_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_need_media_status_next_try_at', table_name='need_media')
    op.drop_index(op.f('ix_need_media_need_id'), table_name='need_media')
    op.drop_table('need_media')
