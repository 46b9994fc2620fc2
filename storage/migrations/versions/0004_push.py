"""push: the sender's claim on an outbox row (crash protocol, see bot/push); need clock marks

Revision ID: 0004_push
Revises: 0001_base
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0004_push'
down_revision = '0001_base'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
        # Residents' unread notices ("您有 N 条新消息") and per-window text counts look rows up this way.
        batch_op.create_index('ix_outbox_resident_status', ['resident_id', 'status'], unique=False)


    # Clocks that fired (storage/need_clocks.ClockMark); need_id is not a foreign key so this revision does not
    # depend on 0002_needs.
    op.create_table('need_clock_mark',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('need_id', sa.Integer(), nullable=False),
    sa.Column('stage', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('due', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('need_id', 'stage', 'due', name='uq_need_clock_mark')
    )
    op.create_index('ix_need_clock_mark_need_id', 'need_clock_mark', ['need_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_need_clock_mark_need_id', table_name='need_clock_mark')
    op.drop_table('need_clock_mark')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_resident_status')
        batch_op.drop_column('claimed_by')
