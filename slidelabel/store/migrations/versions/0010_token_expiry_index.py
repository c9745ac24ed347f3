"""tokens indexed by expiry: each login deletes the expired tokens, which read the whole table

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 06:55:00

Sixteenth attack: with 3 million tokens a login took 0.80 s instead of 0.12 s, and other users'
writes waited behind it (the deletion scanned every row). Logins also keep at most
:data:`slidelabel.services.accounts.TOKENS_PER_USER` tokens per account now.
"""

from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_tokens_expires_at', 'tokens', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_tokens_expires_at', table_name='tokens')
