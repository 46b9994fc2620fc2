"""project acceptance (验收): when the unit last reported a project done

Revision ID: 0019_project_acceptance
Revises: 0001_base
Depends on: 0007_projects (the project table)
A project the unit calls done now waits in `awaiting_accept` (it fits the status column's 16 characters) until
the community accepts it; `completed_at` becomes the moment of acceptance. Projects completed before this
revision were never checked: they stay completed, their `submitted_at` is their completion time.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0019_project_acceptance"
down_revision = "0001_base"
branch_labels = None
depends_on = "0007_projects"


def upgrade() -> None:
    op.add_column('project', sa.Column('submitted_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    project = sa.table('project', sa.column('status'), sa.column('submitted_at'), sa.column('completed_at'))
    op.execute(project.update().where(project.c.status == 'completed')
               .values(submitted_at=project.c.completed_at))


def downgrade() -> None:
    # The older code does not know the status. Back in progress, the unit's next 项目完成 resolves the needs as
    # that code did; marking them completed here would leave their needs open for good.
    project = sa.table('project', sa.column('status'))
    op.execute(project.update().where(project.c.status == 'awaiting_accept').values(status='in_progress'))
    with op.batch_alter_table('project') as batch:
        batch.drop_column('submitted_at')
