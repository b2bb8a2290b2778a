"""refresh_tokens.successor: the pair that replaced a used refresh token, sealed

For the refresh reuse interval: a refresh token presented again shortly after its first use gets
the same successor pair back instead of ending the session. The pair is stored encrypted under a
key derived from the used refresh token itself (which is stored only as its SHA-256), and erased
once the interval is over.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("refresh_tokens", sa.Column("successor", sa.LargeBinary(), nullable=True), schema="auth")


def downgrade() -> None:
    op.drop_column("refresh_tokens", "successor", schema="auth")
