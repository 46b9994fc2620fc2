"""classifier examples: every staff 改类 kept as a labelled message for retraining (storage.classifier.retrain)

Revision ID: 0015_classifier_examples
Revises: 0001_base
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0015_classifier_examples"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('classifier_example',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('text', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('proposed_code', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('chosen_code', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_classifier_example_at', 'classifier_example', ['at'], unique=False)


def downgrade() -> None:
    op.drop_table('classifier_example')
