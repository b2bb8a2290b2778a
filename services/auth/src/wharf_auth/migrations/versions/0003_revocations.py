"""auth.revocations: revoked tokens, sessions and accounts, readable by every service

Replaces ``revoked_tokens`` (one row per revoked jti) with one table for the three kinds of
revocation the services check: ``jti``, ``family`` (a login session) and ``account`` (every token
issued before ``issued_before``). Members of ``wharf_revocation_readers`` (all services, see
provisioning) may read it, so they can re-sync their in-memory copy from Postgres.

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

READER_ROLE = "wharf_revocation_readers"


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
    op.execute(f"GRANT USAGE ON SCHEMA auth TO {READER_ROLE}")
    op.execute(f"GRANT SELECT ON auth.revocations TO {READER_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE SELECT ON auth.revocations FROM {READER_ROLE}")  # noqa: S608 - a constant
    op.execute(f"REVOKE USAGE ON SCHEMA auth FROM {READER_ROLE}")
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
