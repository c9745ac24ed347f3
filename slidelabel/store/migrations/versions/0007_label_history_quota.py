"""label_history_sizes: each user's history of each slide counted, for its quota; label_events
indexed by (slide, user, id), so the oldest of one user's events on a slide are found at once

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 00:10:00

One annotator flipping labels by script wrote about 22 GB of history an hour (issue 13, sixth
attack). :mod:`slidelabel.services.label_history` now keeps a user's history of a slide within a
quota; the counts start from the events already stored.
"""

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('label_history_sizes',
    sa.Column('slide_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('events', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['slide_id'], ['slides.id'], name=op.f('fk_label_history_sizes_slide_id_slides'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_label_history_sizes_user_id_users'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('slide_id', 'user_id', name=op.f('pk_label_history_sizes')),
    )
    op.create_index(op.f('ix_label_events_slide_user_id'), 'label_events', ['slide_id', 'user_id', 'id'])
    op.execute("INSERT INTO label_history_sizes (slide_id, user_id, events) "
               "SELECT slide_id, user_id, count(*) FROM label_events GROUP BY slide_id, user_id")


def downgrade() -> None:
    op.drop_index(op.f('ix_label_events_slide_user_id'), table_name='label_events')
    op.drop_table('label_history_sizes')
