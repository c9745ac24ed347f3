"""jobs.started_at: when a worker last began running a job, its starter's turn on its queue; jobs
indexed by state and by (created_by, started_at) for the look-ups of fair turns

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 03:40:00

One owner's hundred slide jobs kept every other project's jobs waiting behind them on the one
slide worker (issue 13, eighth attack). A job taken while another user's job waits longer for its
turn now steps back to the end of the queue (:func:`slidelabel.services.jobs.steps_back`); jobs
started before this revision count as no turn.
"""

import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('started_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_jobs_state', 'jobs', ['state'])
    op.create_index('ix_jobs_created_by_started_at', 'jobs', ['created_by', 'started_at'])


def downgrade() -> None:
    op.drop_index('ix_jobs_created_by_started_at', table_name='jobs')
    op.drop_index('ix_jobs_state', table_name='jobs')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('started_at')
