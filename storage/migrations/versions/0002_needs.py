"""needs: need, need_event (timeline), need_follower, need_ticket_counter

Revision ID: 0002_needs
Revises: 0001_base
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002_needs"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('need_ticket_counter',
    sa.Column('day', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('last', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day')
    )
    op.create_table('need',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ticket', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('text', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('item_code', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('category', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('tier', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('reporter_id', sa.Integer(), nullable=True),
    sa.Column('filed_by_id', sa.Integer(), nullable=True),
    sa.Column('contact_name', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('contact_phone', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    sa.Column('community_id', sa.Integer(), nullable=False),
    sa.Column('grid_id', sa.Integer(), nullable=True),
    sa.Column('building_id', sa.Integer(), nullable=True),
    sa.Column('room', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('photo_url', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('latitude', sa.Float(), nullable=True),
    sa.Column('longitude', sa.Float(), nullable=True),
    sa.Column('location_label', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('supporters', sa.Integer(), nullable=False),
    sa.Column('assignee_id', sa.Integer(), nullable=True),
    sa.Column('department_id', sa.Integer(), nullable=True),
    sa.Column('merged_into_id', sa.Integer(), nullable=True),
    sa.Column('extension_reason', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('latest_note', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('rating', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
    sa.Column('rating_comment', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('ratings_given', sa.Integer(), nullable=False),
    sa.Column('rework_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('triaged_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('respond_by', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('responded_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('resolve_by', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('feedback_due_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_progress_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('resolved_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('rate_by', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('rated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('reminded_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('chased_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('district_reported_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['assignee_id'], ['resident.id'], ),
    sa.ForeignKeyConstraint(['building_id'], ['building.id'], ),
    sa.ForeignKeyConstraint(['community_id'], ['community.id'], ),
    sa.ForeignKeyConstraint(['department_id'], ['department.id'], ),
    sa.ForeignKeyConstraint(['filed_by_id'], ['resident.id'], ),
    sa.ForeignKeyConstraint(['grid_id'], ['grid.id'], ),
    sa.ForeignKeyConstraint(['merged_into_id'], ['need.id'], ),
    sa.ForeignKeyConstraint(['reporter_id'], ['resident.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('ticket')
    )
    op.create_index(op.f('ix_need_assignee_id'), 'need', ['assignee_id'], unique=False)
    op.create_index(op.f('ix_need_building_id'), 'need', ['building_id'], unique=False)
    op.create_index(op.f('ix_need_community_id'), 'need', ['community_id'], unique=False)
    op.create_index(op.f('ix_need_created_at'), 'need', ['created_at'], unique=False)
    op.create_index(op.f('ix_need_department_id'), 'need', ['department_id'], unique=False)
    op.create_index(op.f('ix_need_feedback_due_at'), 'need', ['feedback_due_at'], unique=False)
    op.create_index(op.f('ix_need_grid_id'), 'need', ['grid_id'], unique=False)
    op.create_index(op.f('ix_need_item_code'), 'need', ['item_code'], unique=False)
    op.create_index(op.f('ix_need_rate_by'), 'need', ['rate_by'], unique=False)
    op.create_index(op.f('ix_need_reporter_id'), 'need', ['reporter_id'], unique=False)
    op.create_index(op.f('ix_need_resolve_by'), 'need', ['resolve_by'], unique=False)
    op.create_index(op.f('ix_need_respond_by'), 'need', ['respond_by'], unique=False)
    op.create_index(op.f('ix_need_status'), 'need', ['status'], unique=False)
    op.create_table('need_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('need_id', sa.Integer(), nullable=False),
    sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('actor_label', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('from_status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('to_status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('public', sa.Boolean(), nullable=False),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['resident.id'], ),
    sa.ForeignKeyConstraint(['need_id'], ['need.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_need_event_need_id'), 'need_event', ['need_id'], unique=False)
    op.create_table('need_follower',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('need_id', sa.Integer(), nullable=False),
    sa.Column('resident_id', sa.Integer(), nullable=False),
    sa.Column('role', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['need_id'], ['need.id'], ),
    sa.ForeignKeyConstraint(['resident_id'], ['resident.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('need_id', 'resident_id', name='uq_need_follower')
    )
    op.create_index(op.f('ix_need_follower_need_id'), 'need_follower', ['need_id'], unique=False)
    op.create_index(op.f('ix_need_follower_resident_id'), 'need_follower', ['resident_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_need_follower_resident_id'), table_name='need_follower')
    op.drop_index(op.f('ix_need_follower_need_id'), table_name='need_follower')
    op.drop_table('need_follower')
    op.drop_index(op.f('ix_need_event_need_id'), table_name='need_event')
    op.drop_table('need_event')
    op.drop_index(op.f('ix_need_status'), table_name='need')
    op.drop_index(op.f('ix_need_respond_by'), table_name='need')
    op.drop_index(op.f('ix_need_resolve_by'), table_name='need')
    op.drop_index(op.f('ix_need_reporter_id'), table_name='need')
    op.drop_index(op.f('ix_need_rate_by'), table_name='need')
    op.drop_index(op.f('ix_need_item_code'), table_name='need')
    op.drop_index(op.f('ix_need_grid_id'), table_name='need')
    op.drop_index(op.f('ix_need_feedback_due_at'), table_name='need')
    op.drop_index(op.f('ix_need_department_id'), table_name='need')
    op.drop_index(op.f('ix_need_created_at'), table_name='need')
    op.drop_index(op.f('ix_need_community_id'), table_name='need')
    op.drop_index(op.f('ix_need_building_id'), table_name='need')
    op.drop_index(op.f('ix_need_assignee_id'), table_name='need')
    op.drop_table('need')
    op.drop_table('need_ticket_counter')
