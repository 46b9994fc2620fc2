"""points: the volunteer time bank — ledger, accounts, rewards, redemptions, activities

Revision ID: 0005_points
Revises: 0001_base
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0005_points'
down_revision = '0001_base'
branch_labels = None
depends_on = None

UTC = sqlmodel.sql.sqltypes.UTCDateTime
Str = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        'points_account',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('resident_id', sa.Integer(), nullable=True),
        sa.Column('fund_community_id', sa.Integer(), nullable=True),
        sa.Column('balance', sa.Integer(), nullable=False),
        sa.Column('served_half_hours', sa.Integer(), nullable=False),
        sa.Column('expiry_checked_at', UTC(), nullable=True),
        sa.Column('created_at', UTC(), nullable=False),
        sa.CheckConstraint('balance >= 0', name='ck_points_account_balance'),
        sa.ForeignKeyConstraint(['resident_id'], ['resident.id']),
        sa.ForeignKeyConstraint(['fund_community_id'], ['community.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('resident_id'),
        sa.UniqueConstraint('fund_community_id'),
    )
    op.create_table(
        'points_entry',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('kind', Str(length=16), nullable=False),
        sa.Column('amount', sa.Integer(), nullable=False),
        sa.Column('half_hours', sa.Integer(), nullable=False),
        sa.Column('reason', Str(length=128), nullable=False),
        sa.Column('reference', Str(length=64), nullable=False),
        sa.Column('actor', Str(length=64), nullable=False),
        sa.Column('key', Str(length=128), nullable=True),
        sa.Column('created_at', UTC(), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['points_account.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('key'),
    )
    op.create_index('ix_points_entry_account_at', 'points_entry', ['account_id', 'created_at'], unique=False)

    op.create_table(
        'reward',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('community_id', sa.Integer(), nullable=False),
        sa.Column('kind', Str(length=16), nullable=False),
        sa.Column('name', Str(length=64), nullable=False),
        sa.Column('description', Str(length=200), nullable=False),
        sa.Column('price', sa.Integer(), nullable=False),
        sa.Column('stock', sa.Integer(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_by', Str(length=64), nullable=False),
        sa.Column('created_at', UTC(), nullable=False),
        sa.CheckConstraint('stock >= 0', name='ck_reward_stock'),
        sa.CheckConstraint('price > 0', name='ck_reward_price'),
        sa.ForeignKeyConstraint(['community_id'], ['community.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_reward_community_id', 'reward', ['community_id'], unique=False)

    op.create_table(
        'redemption',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('resident_id', sa.Integer(), nullable=False),
        sa.Column('reward_id', sa.Integer(), nullable=False),
        sa.Column('community_id', sa.Integer(), nullable=False),
        sa.Column('price', sa.Integer(), nullable=False),
        sa.Column('status', Str(length=16), nullable=False),
        sa.Column('pickup_code', Str(length=8), nullable=False),
        sa.Column('request_key', Str(length=128), nullable=False),
        sa.Column('created_at', UTC(), nullable=False),
        sa.Column('expires_at', UTC(), nullable=True),
        sa.Column('closed_at', UTC(), nullable=True),
        sa.Column('closed_by', Str(length=64), nullable=True),
        sa.ForeignKeyConstraint(['resident_id'], ['resident.id']),
        sa.ForeignKeyConstraint(['reward_id'], ['reward.id']),
        sa.ForeignKeyConstraint(['community_id'], ['community.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('pickup_code'),
        sa.UniqueConstraint('request_key'),
    )
    op.create_index('ix_redemption_resident_id', 'redemption', ['resident_id'], unique=False)
    op.create_index('ix_redemption_reward_id', 'redemption', ['reward_id'], unique=False)
    op.create_index('ix_redemption_due', 'redemption', ['status', 'expires_at'], unique=False)

    op.create_table(
        'activity',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('community_id', sa.Integer(), nullable=False),
        sa.Column('title', Str(length=64), nullable=False),
        sa.Column('place', Str(length=64), nullable=False),
        sa.Column('starts_at', UTC(), nullable=False),
        sa.Column('ends_at', UTC(), nullable=False),
        sa.Column('capacity', sa.Integer(), nullable=False),
        sa.Column('half_hours', sa.Integer(), nullable=False),
        sa.Column('project_ref', Str(length=32), nullable=False),
        sa.Column('need_id', sa.Integer(), nullable=True),
        sa.Column('checkin_code', Str(length=8), nullable=False),
        sa.Column('checkout_code', Str(length=8), nullable=False),
        sa.Column('status', Str(length=16), nullable=False),
        sa.Column('created_by', Str(length=64), nullable=False),
        sa.Column('created_at', UTC(), nullable=False),
        sa.ForeignKeyConstraint(['community_id'], ['community.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('checkin_code'),
        sa.UniqueConstraint('checkout_code'),
    )
    op.create_index('ix_activity_community_id', 'activity', ['community_id'], unique=False)
    op.create_index('ix_activity_starts_at', 'activity', ['starts_at'], unique=False)

    op.create_table(
        'activity_signup',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('activity_id', sa.Integer(), nullable=False),
        sa.Column('resident_id', sa.Integer(), nullable=False),
        sa.Column('status', Str(length=16), nullable=False),
        sa.Column('queued_at', UTC(), nullable=False),
        sa.Column('checked_in_at', UTC(), nullable=True),
        sa.Column('checked_out_at', UTC(), nullable=True),
        sa.Column('confirmed_at', UTC(), nullable=True),
        sa.Column('confirmed_by', Str(length=64), nullable=True),
        sa.Column('points', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['activity_id'], ['activity.id']),
        sa.ForeignKeyConstraint(['resident_id'], ['resident.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('activity_id', 'resident_id', name='uq_activity_signup'),
    )
    op.create_index('ix_activity_signup_activity_id', 'activity_signup', ['activity_id'], unique=False)
    op.create_index('ix_activity_signup_resident_id', 'activity_signup', ['resident_id'], unique=False)


def downgrade() -> None:
    op.drop_table('activity_signup')
    op.drop_table('activity')
    op.drop_table('redemption')
    op.drop_table('reward')
    op.drop_index('ix_points_entry_account_at', table_name='points_entry')
    op.drop_table('points_entry')
    op.drop_table('points_account')
