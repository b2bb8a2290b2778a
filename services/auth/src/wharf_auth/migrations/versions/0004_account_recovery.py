"""auth.account_tokens and accounts.email_verified_at: password reset and email verification

Single-use tokens mailed to an account's address, stored only as their SHA-256; the newest of each
purpose per account is the only one usable (issuing one marks the earlier ones superseded).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("email_verified_at", sa.DateTime(timezone=True), nullable=True), schema="auth")
    op.create_table(
        "account_tokens",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("auth.accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("token_hash", name="account_tokens_token_hash_key"),
        sa.CheckConstraint("purpose IN ('reset', 'verify')", name="account_tokens_purpose_check"),
        schema="auth",
    )
    op.create_index("account_tokens_account_purpose_idx", "account_tokens", ["account_id", "purpose"], schema="auth")
    op.create_index("account_tokens_expires_at_idx", "account_tokens", ["expires_at"], schema="auth")


def downgrade() -> None:
    op.drop_table("account_tokens", schema="auth")
    op.drop_column("accounts", "email_verified_at", schema="auth")
