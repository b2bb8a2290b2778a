"""gunicorn entry point: ``gunicorn wharf_api.wsgi:app``."""

from wharf_api import create_app

app = create_app()
