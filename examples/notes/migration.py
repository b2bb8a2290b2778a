"""notes: the example resource's table (in the service: migrations/versions/NNNN_<name>.py)

Revision ID: notes_example
Revises: (in the service: the latest revision)
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "notes_example"
down_revision = None  # in the service: the latest revision's id, e.g. "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.String(10_000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        schema="api",
    )
    op.create_index("ix_api_notes_owner", "notes", ["owner"], schema="api")


def downgrade() -> None:
    op.drop_index("ix_api_notes_owner", table_name="notes", schema="api")
    op.drop_table("notes", schema="api")
