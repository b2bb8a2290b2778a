"""Account security: sessions, the TOTP second factor, recovery codes, account events, sign-in alerts

Expand only (the release before keeps working on this schema): new tables; two nullable columns
(refresh_tokens.amr, account_tokens.family_id); the purpose check of account_tokens widened to
the sign-in alert's ``alert`` and the second factor's ``mfa`` challenge.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def account() -> sa.ForeignKey:
    return sa.ForeignKey("auth.accounts.id", ondelete="CASCADE")


def upgrade() -> None:
    op.add_column("refresh_tokens", sa.Column("amr", sa.ARRAY(sa.String(16)), nullable=True), schema="auth")
    op.add_column("account_tokens", sa.Column("family_id", sa.Uuid(), nullable=True), schema="auth")
    op.drop_constraint("account_tokens_purpose_check", "account_tokens", schema="auth")
    op.create_check_constraint(
        "account_tokens_purpose_check",
        "account_tokens",
        "purpose IN ('reset', 'verify', 'alert', 'mfa')",
        schema="auth",
    )
    op.create_table(
        "sessions",
        sa.Column("family_id", sa.Uuid(), primary_key=True),
        sa.Column("account_id", sa.Uuid(), account(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("client", sa.String(100), nullable=False),
        sa.Column("network", sa.String(64), nullable=False),
        schema="auth",
    )
    op.create_index("sessions_account_created_idx", "sessions", ["account_id", "created_at"], schema="auth")
    op.create_table(
        "totp_factors",
        sa.Column("account_id", sa.Uuid(), account(), primary_key=True),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=True),
        schema="auth",
    )
    op.create_table(
        "recovery_codes",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("account_id", sa.Uuid(), account(), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("account_id", "code_hash", name="recovery_codes_account_code_key"),
        schema="auth",
    )
    op.create_table(
        "account_events",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("account_id", sa.Uuid(), account(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("client", sa.String(100), nullable=True),
        sa.Column("network", sa.String(64), nullable=True),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        schema="auth",
    )
    # The owner's page, newest first (keyset on at, id); the retention sweep by time.
    op.create_index("account_events_account_at_idx", "account_events", ["account_id", "at", "id"], schema="auth")
    op.create_index("account_events_at_idx", "account_events", ["at"], schema="auth")
    op.create_index("refresh_tokens_expires_at_idx", "refresh_tokens", ["expires_at"], schema="auth")


def downgrade() -> None:
    op.drop_index("refresh_tokens_expires_at_idx", table_name="refresh_tokens", schema="auth")
    for table in ("account_events", "recovery_codes", "totp_factors", "sessions"):
        op.drop_table(table, schema="auth")
    op.drop_constraint("account_tokens_purpose_check", "account_tokens", schema="auth")
    op.execute("DELETE FROM auth.account_tokens WHERE purpose NOT IN ('reset', 'verify')")
    op.create_check_constraint(
        "account_tokens_purpose_check", "account_tokens", "purpose IN ('reset', 'verify')", schema="auth"
    )
    op.drop_column("account_tokens", "family_id", schema="auth")
    op.drop_column("refresh_tokens", "amr", schema="auth")
