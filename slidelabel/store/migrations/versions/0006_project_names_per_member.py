"""projects.name no longer unique across the server: a name is unique among the projects a user
is a member of

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 17:45:00

A server-wide unique name told anyone who tried a name that some other user's project had it (the
409 of issue 13). :func:`slidelabel.services.projects.create_project` now refuses a name only when
a project the caller is a member of has it. Downgrading fails while two projects share a name.
"""

from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

#: A batch may rebuild the SQLite table: it stays AUTOINCREMENT (revision 0003).
NEVER_REUSED = {'sqlite_autoincrement': True}


def upgrade() -> None:
    with op.batch_alter_table('projects', table_kwargs=NEVER_REUSED) as batch:
        batch.drop_constraint(op.f('uq_projects_name'), type_='unique')
        batch.create_index(op.f('ix_projects_name'), ['name'])


def downgrade() -> None:
    with op.batch_alter_table('projects', table_kwargs=NEVER_REUSED) as batch:
        batch.drop_index(op.f('ix_projects_name'))
        batch.create_unique_constraint(op.f('uq_projects_name'), ['name'])
