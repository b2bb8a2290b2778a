from alembic import context

from wharf_auth.models import Base
from wharf_common.migrations import run_migrations

run_migrations(context, Base.metadata)
