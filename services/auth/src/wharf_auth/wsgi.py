"""gunicorn entry point: ``gunicorn wharf_auth.wsgi:app``."""

from wharf_auth import create_app

app = create_app()
