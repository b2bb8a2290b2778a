"""auth.revocations: revoked tokens, sessions and accounts

Replaces ``revoked_tokens`` (one row per revoked jti) with one table for the three kinds of
revocation the services check: ``jti``, ``family`` (a login session) and ``account`` (every token
issued before ``issued_before``). Other services read it through auth's internal endpoint.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revocations",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.String(64), nullable=False),
        sa.Column("issued_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "value", name="revocations_pkey"),
        sa.CheckConstraint("kind IN ('jti', 'family', 'account')", name="revocations_kind_check"),
        sa.CheckConstraint("(kind = 'account') = (issued_before IS NOT NULL)", name="revocations_issued_before_check"),
        schema="auth",
    )
    op.create_index("revocations_expires_at_idx", "revocations", ["expires_at"], schema="auth")
    op.execute(
        "INSERT INTO auth.revocations (kind, value, expires_at)"
        " SELECT 'jti', jti, expires_at FROM auth.revoked_tokens WHERE expires_at > now()"
    )
    op.drop_table("revoked_tokens", schema="auth")


def downgrade() -> None:
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        schema="auth",
    )
    op.create_index("revoked_tokens_expires_at_idx", "revoked_tokens", ["expires_at"], schema="auth")
    op.execute(
        "INSERT INTO auth.revoked_tokens (jti, expires_at)"
        " SELECT value, expires_at FROM auth.revocations WHERE kind = 'jti'"
    )
    op.drop_index("revocations_expires_at_idx", table_name="revocations", schema="auth")
    op.drop_table("revocations", schema="auth")
