"""refresh tokens, revoked access tokens, accounts.tokens_valid_after

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("tokens_valid_after", sa.DateTime(timezone=True), nullable=True), schema="auth")
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "account_id",
            sa.Uuid(),
            sa.ForeignKey("auth.accounts.id", ondelete="CASCADE", name="refresh_tokens_account_id_fkey"),
            nullable=False,
        ),
        sa.Column("family_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("token_hash", name="refresh_tokens_token_hash_key"),
        schema="auth",
    )
    op.create_index("refresh_tokens_family_id_idx", "refresh_tokens", ["family_id"], schema="auth")
    op.create_index("refresh_tokens_account_id_idx", "refresh_tokens", ["account_id"], schema="auth")
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        schema="auth",
    )
    op.create_index("revoked_tokens_expires_at_idx", "revoked_tokens", ["expires_at"], schema="auth")


def downgrade() -> None:
    op.drop_index("revoked_tokens_expires_at_idx", table_name="revoked_tokens", schema="auth")
    op.drop_table("revoked_tokens", schema="auth")
    op.drop_index("refresh_tokens_account_id_idx", table_name="refresh_tokens", schema="auth")
    op.drop_index("refresh_tokens_family_id_idx", table_name="refresh_tokens", schema="auth")
    op.drop_table("refresh_tokens", schema="auth")
    op.drop_column("accounts", "tokens_valid_after", schema="auth")
