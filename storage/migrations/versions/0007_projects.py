"""projects, year-end review, satisfaction survey

Revision ID: 0007_projects
Revises: 0001_base
Need and consultation-topic ids are plain integers (no foreign key), so this revision depends on the base only.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007_projects"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('project',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('community_id', sa.Integer(), nullable=False),
        sa.Column('title', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('content', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column('measures', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column('deadline', sa.Date(), nullable=False),
        sa.Column('topic_id', sa.Integer(), nullable=True),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('unit_id', sa.Integer(), nullable=True),
        sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('published_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('claimed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('completed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('completion_note', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.ForeignKeyConstraint(['community_id'], ['community.id']),
        sa.ForeignKeyConstraint(['unit_id'], ['department.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_project_topic_id', 'project', ['topic_id'], unique=False)
    op.create_index('ix_project_status', 'project', ['status'], unique=False)
    op.create_index('ix_project_community_id', 'project', ['community_id'], unique=False)
    op.create_index('ix_project_unit_id', 'project', ['unit_id'], unique=False)

    op.create_table('project_need',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('need_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('project_id', 'need_id', name='uq_project_need'),
    )
    op.create_index('ix_project_need_project_id', 'project_need', ['project_id'], unique=False)
    op.create_index('ix_project_need_need_id', 'project_need', ['need_id'], unique=False)

    op.create_table('project_agreement',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('unit_id', sa.Integer(), nullable=False),
        sa.Column('content', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column('measures', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column('deadline', sa.Date(), nullable=False),
        sa.Column('via', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('signed_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('signed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.ForeignKeyConstraint(['unit_id'], ['department.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('project_id'),
    )
    op.create_index('ix_project_agreement_unit_id', 'project_agreement', ['unit_id'], unique=False)

    op.create_table('project_update',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('text', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_project_update_project_id', 'project_update', ['project_id'], unique=False)

    op.create_table('review',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('community_id', sa.Integer(), nullable=False),
        sa.Column('year', sa.Integer(), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('opens_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('closes_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('closed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('eligible', sa.Integer(), nullable=True),
        sa.Column('voters', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['community_id'], ['community.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('community_id', 'year', name='uq_review_community_year'),
    )
    op.create_index('ix_review_community_id', 'review', ['community_id'], unique=False)

    op.create_table('review_item',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('review_id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['review_id'], ['review.id']),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('review_id', 'project_id', name='uq_review_item'),
    )
    op.create_index('ix_review_item_review_id', 'review_item', ['review_id'], unique=False)

    op.create_table('review_voter',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('review_id', sa.Integer(), nullable=False),
        sa.Column('resident_id', sa.Integer(), nullable=False),
        sa.Column('receipt', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('first_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['review_id'], ['review.id']),
        sa.ForeignKeyConstraint(['resident_id'], ['resident.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('review_id', 'resident_id', name='uq_review_voter'),
        sa.UniqueConstraint('receipt'),
    )
    op.create_index('ix_review_voter_resident_id', 'review_voter', ['resident_id'], unique=False)
    op.create_index('ix_review_voter_review_id', 'review_voter', ['review_id'], unique=False)

    op.create_table('ballot',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('review_id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('resident_id', sa.Integer(), nullable=False),
        sa.Column('choice', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('comment', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column('cast_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('changes', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['review_id'], ['review.id']),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.ForeignKeyConstraint(['resident_id'], ['resident.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('review_id', 'project_id', 'resident_id', name='uq_ballot'),
    )
    op.create_index('ix_ballot_review_id', 'ballot', ['review_id'], unique=False)
    op.create_index('ix_ballot_resident_id', 'ballot', ['resident_id'], unique=False)

    op.create_table('review_tally',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('review_id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('satisfied', sa.Integer(), nullable=False),
        sa.Column('basic', sa.Integer(), nullable=False),
        sa.Column('unsatisfied', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['review_id'], ['review.id']),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('review_id', 'project_id', name='uq_review_tally'),
    )
    op.create_index('ix_review_tally_review_id', 'review_tally', ['review_id'], unique=False)

    op.create_table('survey',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('seed', sa.BigInteger(), nullable=False),
        sa.Column('per_community', sa.Integer(), nullable=False),
        sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_survey_created_at', 'survey', ['created_at'], unique=False)

    op.create_table('survey_sample',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('survey_id', sa.Integer(), nullable=False),
        sa.Column('resident_id', sa.Integer(), nullable=False),
        sa.Column('community_id', sa.Integer(), nullable=False),
        sa.Column('grid_id', sa.Integer(), nullable=False),
        sa.Column('invited_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('overall', sa.Integer(), nullable=True),
        sa.Column('grid_score', sa.Integer(), nullable=True),
        sa.Column('comment', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column('answered_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('need_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['survey_id'], ['survey.id']),
        sa.ForeignKeyConstraint(['resident_id'], ['resident.id']),
        sa.ForeignKeyConstraint(['community_id'], ['community.id']),
        sa.ForeignKeyConstraint(['grid_id'], ['grid.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('survey_id', 'resident_id', name='uq_survey_sample'),
    )
    op.create_index('ix_survey_sample_invited_at', 'survey_sample', ['invited_at'], unique=False)
    op.create_index('ix_survey_sample_resident_id', 'survey_sample', ['resident_id'], unique=False)
    op.create_index('ix_survey_sample_community_id', 'survey_sample', ['community_id'], unique=False)
    op.create_index('ix_survey_sample_survey_id', 'survey_sample', ['survey_id'], unique=False)


def downgrade() -> None:
    op.drop_table('survey_sample')
    op.drop_table('survey')
    op.drop_table('review_tally')
    op.drop_table('ballot')
    op.drop_table('review_voter')
    op.drop_table('review_item')
    op.drop_table('review')
    op.drop_table('project_update')
    op.drop_table('project_agreement')
    op.drop_table('project_need')
    op.drop_table('project')
