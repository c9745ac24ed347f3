"""users.disabled, users.can_create_projects, users.can_read_slide_folders: what the admin grants

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 12:05:00

Accounts can be disabled (their tokens stop at the next request, they cannot log in), and creating
projects and reading the server's slide folders are permissions the admin grants each account.
Every account starts enabled and with neither permission, existing ones included: the admin grants
them (``PATCH /users/{id}``), or ``SLIDELABEL_OPEN_PROJECT_CREATION`` lets every account create
projects. The admin needs neither flag.
"""

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

#: Boolean columns, all false by default, in the order they are added.
COLUMNS = ('disabled', 'can_create_projects', 'can_read_slide_folders')
#: A batch may rebuild the SQLite table: it stays AUTOINCREMENT (revision 0003).
NEVER_REUSED = {'sqlite_autoincrement': True}


def upgrade() -> None:
    with op.batch_alter_table('users', table_kwargs=NEVER_REUSED) as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('users', table_kwargs=NEVER_REUSED) as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
