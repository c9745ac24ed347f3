"""projects.normalisation: how stain and scanner differences between slides are removed

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 11:10:00

Projects made before this revision trained on features standardised with the labelled
superpixels' statistics only: they keep that behaviour as "none".
"""

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('projects') as batch:
        batch.add_column(sa.Column('normalisation', sa.String(length=100), nullable=False, server_default='none'))


def downgrade() -> None:
    with op.batch_alter_table('projects') as batch:
        batch.drop_column('normalisation')
