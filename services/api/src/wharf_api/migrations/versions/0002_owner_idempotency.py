"""users.owner and idempotency keys

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
    op.add_column("users", sa.Column("owner", sa.String(64), nullable=True), schema="api")
    op.create_index("users_owner_idx", "users", ["owner"], schema="api")
    op.create_table(
        "idempotency_keys",
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("location", sa.String(512), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("owner", "key", name="idempotency_keys_pkey"),
        schema="api",
    )
    op.create_index("idempotency_keys_created_at_idx", "idempotency_keys", ["created_at"], schema="api")


def downgrade() -> None:
    op.drop_index("idempotency_keys_created_at_idx", table_name="idempotency_keys", schema="api")
    op.drop_table("idempotency_keys", schema="api")
    op.drop_index("users_owner_idx", table_name="users", schema="api")
    op.drop_column("users", "owner", schema="api")
