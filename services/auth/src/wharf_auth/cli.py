"""Operator commands: ``flask --app wharf_auth grant-admin EMAIL`` (no HTTP endpoint grants roles)
and ``unlock EMAIL`` (``make admin``, ``make unlock``)."""

from __future__ import annotations

import click
import redis
from flask import Flask
from flask.cli import with_appcontext

from wharf_auth import events, extensions, queries, sessions
from wharf_auth.limits import Limit, email_key
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


@click.command("unlock")
@click.argument("email")
@with_appcontext
def unlock(email: str) -> None:
    """Lift the sign-in lock of EMAIL: its failed attempts are forgotten now (says if there were none)."""
    address = email.strip().lower()
    found = extensions.of()
    limit = Limit(email_key(address), sessions.settings().login_max_failures)
    try:
        failures = found.limiter.clear(limit)
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis is unavailable ({type(exc).__name__}); nothing changed") from None
    if failures >= limit.max_failures:
        events.emit("account_unlocked", email=address)
        click.echo(f"{address}: unlocked ({failures} failed sign-ins forgotten)")
    elif failures:
        click.echo(f"{address}: was not locked ({failures} failed sign-ins forgotten)")
    else:
        click.echo(f"{address}: was not locked (no failed sign-in counted)")


def init_app(app: Flask) -> None:
    app.cli.add_command(grant_admin)
    app.cli.add_command(unlock)
