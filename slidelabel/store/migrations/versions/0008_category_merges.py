"""category_merges: which deleted category each merged one now reads as; category positions made
unique in each project

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 00:50:00

Merging a category left the predictions of earlier epochs holding the deleted id: exports dropped
or mislabelled those superpixels (issue 5, eighth attack). A merge now keeps a row here, and
:meth:`slidelabel.store.predictions.SlidePredictions.merged` reads such ids as their target.

A new category took the number of categories as its position, the position of an existing one
after a merge, so two categories had one label-mask value (issue 4). New ones now come after the
last; here the categories that share a position with an older one (lower id) of their project
move after the project's last position, in id order (or to the lowest free position when that
would pass 254, the highest a uint8 mask holds). Merges made before this revision are not known:
their predictions stay as they were.
"""

import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

#: As services/projects.py: a label mask holds position + 1 in a uint8.
MAX_POSITION = 254


def upgrade() -> None:
    op.create_table('category_merges',
    sa.Column('source_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_category_merges_project_id_projects'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['target_id'], ['categories.id'], name=op.f('fk_category_merges_target_id_categories'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('source_id', name=op.f('pk_category_merges')),
    )
    with op.batch_alter_table('category_merges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_category_merges_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_category_merges_target_id'), ['target_id'], unique=False)
    _separate_positions()


def _separate_positions() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text('SELECT id, project_id, position FROM categories ORDER BY project_id, id')).all()
    used: dict[int, set[int]] = {}
    for _id, project_id, position in rows:
        used.setdefault(project_id, set()).add(position)
    kept: set[tuple[int, int]] = set()
    for category_id, project_id, position in rows:
        if (project_id, position) not in kept:
            kept.add((project_id, position))
            continue
        taken = used[project_id]
        after = max(taken) + 1
        free = after if after <= MAX_POSITION else next(
            (p for p in range(MAX_POSITION + 1) if p not in taken), after)
        taken.add(free)
        kept.add((project_id, free))
        bind.execute(sa.text('UPDATE categories SET position = :position WHERE id = :id'),
                     {'id': category_id, 'position': free})


def downgrade() -> None:
    with op.batch_alter_table('category_merges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_category_merges_target_id'))
        batch_op.drop_index(batch_op.f('ix_category_merges_project_id'))
    op.drop_table('category_merges')
