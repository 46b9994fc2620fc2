"""anonymous survey answers: scores and comments move from the resident's sample row to `survey_answer`

Revision ID: 0017_survey_anonymous
Revises: 0001_base
Depends on: 0007_projects (the survey tables)
The sample row keeps only `answered_at` (so nobody answers twice). Answers already given are copied over with
random ids and without the resident; the follow-up need a low score used to become keeps its own record.
"""

import secrets

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0017_survey_anonymous"
down_revision = "0001_base"
branch_labels = None
depends_on = "0007_projects"


def upgrade() -> None:
    answers = op.create_table('survey_answer',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('survey_id', sa.Integer(), nullable=False),
    sa.Column('community_id', sa.Integer(), nullable=False),
    sa.Column('grid_id', sa.Integer(), nullable=False),
    sa.Column('overall', sa.Integer(), nullable=False),
    sa.Column('grid_score', sa.Integer(), nullable=False),
    sa.Column('comment', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.ForeignKeyConstraint(['community_id'], ['community.id']),
    sa.ForeignKeyConstraint(['grid_id'], ['grid.id']),
    sa.ForeignKeyConstraint(['survey_id'], ['survey.id']),
    sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_survey_answer_survey_id', 'survey_answer', ['survey_id'], unique=False)
    sample = sa.table('survey_sample', sa.column('survey_id'), sa.column('community_id'), sa.column('grid_id'),
                      sa.column('overall'), sa.column('grid_score'), sa.column('comment'))
    given = op.get_bind().execute(
        sa.select(sample.c.survey_id, sample.c.community_id, sample.c.grid_id, sample.c.overall,
                  sample.c.grid_score, sample.c.comment)
        .where(sample.c.overall.is_not(None), sample.c.grid_score.is_not(None))
    ).all()
    rows = [dict(id=secrets.token_hex(16), survey_id=r[0], community_id=r[1], grid_id=r[2], overall=r[3],
                 grid_score=r[4], comment=r[5]) for r in given]
    rows.sort(key=lambda r: r["id"])  # no trace of the old order
    if rows:
        op.bulk_insert(answers, rows)
    with op.batch_alter_table('survey_sample') as batch:
        for column in ('overall', 'grid_score', 'comment', 'need_id'):
            batch.drop_column(column)


def downgrade() -> None:
    # The answers cannot be given back to their residents (that is the point); the columns come back empty.
    with op.batch_alter_table('survey_sample') as batch:
        batch.add_column(sa.Column('overall', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('grid_score', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('comment', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True))
        batch.add_column(sa.Column('need_id', sa.Integer(), nullable=True))
    op.drop_table('survey_answer')
