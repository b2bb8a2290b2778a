"""Operator commands: ``flask --app wharf_auth grant-admin EMAIL``. No HTTP endpoint grants roles."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import with_appcontext

from wharf_auth import events, queries
from wharf_common.db import get_session


@click.command("grant-admin")
@click.argument("email")
@with_appcontext
def grant_admin(email: str) -> None:
    """Add the role ``admin`` to the account with EMAIL."""
    session = get_session()
    account = queries.account_by_email(session, email=email.strip())
    if account is None:
        raise click.ClickException(f"no account with email {email!r}")
    if "admin" not in account.roles:
        account.roles = [*account.roles, "admin"]
        session.commit()
        events.emit("role_granted", account_id=account.id)
    click.echo(f"{account.email}: roles {', '.join(account.roles)}")


def init_app(app: Flask) -> None:
    app.cli.add_command(grant_admin)
