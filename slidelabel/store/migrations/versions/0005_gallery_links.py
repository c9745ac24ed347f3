"""gallery_links: read-only links to a project or some of its slides, opened without an account

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 14:10:00

An owner publishes a link (labels or predictions over the project's slides, or chosen ones); only
the SHA-256 of its token is stored. A revoked link keeps its row (``revoked_at``) so that the
owner's list says when it stopped. Ids are never reused (revision 0003).
"""

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gallery_links',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('slide_ids', sa.JSON(), nullable=False),
    sa.Column('overlay', sa.Enum('labels', 'predictions', name='galleryoverlay', native_enum=False, length=20),
              nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_gallery_links_created_by_users'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_gallery_links_project_id_projects'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gallery_links')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_gallery_links_token_sha256')),
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('gallery_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gallery_links_project_id'), ['project_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('gallery_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gallery_links_project_id'))
    op.drop_table('gallery_links')
