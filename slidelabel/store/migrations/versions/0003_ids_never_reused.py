"""ids never reused: SQLite tables whose ids name folders and URLs become AUTOINCREMENT

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 11:40:00

Without AUTOINCREMENT, SQLite gives the next row the largest id in use plus one, so a deleted
project's id went to the next project, which was then served the old one's files. A table's
AUTOINCREMENT is part of its CREATE TABLE, so each is rebuilt (Alembic's batch copy). PostgreSQL's
sequences never hand out an id twice: nothing to do there.
"""

from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

#: Parents before children, as the rebuild copies rows.
TABLES = ('users', 'projects', 'categories', 'slides', 'epochs', 'jobs')


def _rebuild(autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != 'sqlite':
        return
    if bind.exec_driver_sql('PRAGMA foreign_keys').scalar():
        # Rebuilding drops the old table, which with foreign keys on deletes every row referring
        # to it; slidelabel.store.database.migrate turns them off around migrations.
        raise RuntimeError('run this migration with SQLite foreign keys off (slidelabel does so itself)')
    for table in TABLES:
        with op.batch_alter_table(table, recreate='always', table_kwargs={'sqlite_autoincrement': autoincrement}):
            pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
