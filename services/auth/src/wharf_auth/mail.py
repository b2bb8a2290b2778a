"""Mail to account owners, out of the request path: an RQ queue on the service's Redis and the jobs
the mail worker (:mod:`wharf_auth.worker`) runs. Password-reset and verification links, sign-in
alerts (a session from a client new to the account, with a link that ends it) and lock notices.

A request only enqueues the address (:func:`enqueue`) or the new session's id
(:func:`enqueue_sign_in_alert`); the worker looks the account up, issues the token
(:mod:`wharf_auth.recovery`), renders the plain-text and HTML bodies from ``templates/mail/`` and
hands the message to the SMTP server. So the token never passes through Redis, and a
password-reset request costs the same whether the account exists or not. A job that fails (SMTP
down, worker killed mid-job) is retried with growing pauses; each attempt issues a new token,
which supersedes the one of the attempt before. Jobs are JSON (RQ's JSONSerializer), never
pickles, and name no address or token in their description, which RQ logs.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

import redis
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from rq import Queue, Retry
from rq.serializers import JSONSerializer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from wharf_auth import events, queries, recovery
from wharf_auth.models import Account
from wharf_auth.sessions import now
from wharf_auth.settings import MailWorkerSettings
from wharf_common import db
from wharf_common.settings import load_settings

log = logging.getLogger(__name__)

QUEUE = "auth-mail"
# Pauses before each retry (seconds): about 3 hours in all, then the job stays in RQ's failed
# registry for FAILED_KEPT_SECONDS.
RETRY_PAUSES = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 3600)
JOB_TIMEOUT_SECONDS = 60
FAILED_KEPT_SECONDS = 7 * 86_400
ALERT = recovery.ALERT
LOCKED = "locked"
SUBJECTS = {
    recovery.RESET: "Reset your Wharf password",
    recovery.VERIFY: "Confirm your email address for Wharf",
    ALERT: "New sign-in to your Wharf account",
    LOCKED: "Your Wharf account is locked for a while",
}
PAGES = {recovery.RESET: "reset-password", recovery.VERIFY: "verify-email", ALERT: "sign-in-alert"}


class MailJobFailed(Exception):
    """The database or the SMTP server failed the job (RQ retries it). Its message, which RQ logs,
    names neither the address nor the token, unlike the errors it replaces (SQLAlchemy's carry
    the statement's parameters)."""


def queue(connection: redis.Redis) -> Queue:
    return Queue(QUEUE, connection=connection, serializer=JSONSerializer)


def enqueue(connection: redis.Redis, purpose: str, email: str) -> None:
    """Queue the mail of ``purpose`` (reset, verify or locked) for ``email`` (raises
    redis.RedisError when Redis is down)."""
    jobs = {recovery.RESET: send_password_reset, recovery.VERIFY: send_email_verification, LOCKED: send_lock_notice}
    _enqueue(connection, purpose, jobs[purpose], email)


def enqueue_sign_in_alert(connection: redis.Redis, family_id: uuid.UUID) -> None:
    """Queue the alert about the new session ``family_id`` (raises redis.RedisError when Redis is down)."""
    _enqueue(connection, ALERT, send_sign_in_alert, str(family_id))


def _enqueue(connection: redis.Redis, purpose: str, job: Callable[[str], None], argument: str) -> None:
    queue(connection).enqueue(
        job,
        argument,
        description=f"{purpose} mail",  # RQ logs it; the default would show the argument
        retry=Retry(max=len(RETRY_PAUSES), interval=list(RETRY_PAUSES)),
        job_timeout=JOB_TIMEOUT_SECONDS,
        result_ttl=0,
        failure_ttl=FAILED_KEPT_SECONDS,
    )


# -- the worker's side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    settings: MailWorkerSettings
    sessions: sessionmaker[Session]
    templates: Environment


_runtime: Runtime | None = None


def configure(settings: MailWorkerSettings) -> Runtime:
    """Build what the jobs need (the worker calls it once at start; tests with their own settings)."""
    global _runtime  # one per worker process, as the app factory builds one set of extensions per app
    templates = Environment(
        loader=PackageLoader("wharf_auth", "templates/mail"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    _runtime = Runtime(settings, db.make_sessions(db.make_engine(settings, ping_at_checkout=True)), templates)
    return _runtime


def runtime() -> Runtime:
    return _runtime or configure(load_settings(MailWorkerSettings))


def send_password_reset(email: str) -> None:
    """Job: mail a password-reset link to the account with ``email``, if there is one."""
    _send(recovery.RESET, lambda found, session: _prepare_link(found, session, recovery.RESET, email), email=email)


def send_email_verification(email: str) -> None:
    """Job: mail a verification link to the account with ``email``, unless it is verified already."""
    _send(recovery.VERIFY, lambda found, session: _prepare_link(found, session, recovery.VERIFY, email), email=email)


def send_sign_in_alert(family_id: str) -> None:
    """Job: tell the owner of session ``family_id`` that it started from a client new to the
    account, with a link that ends it ("this wasn't me")."""
    _send(ALERT, lambda found, session: _prepare_alert(found, session, uuid.UUID(family_id)))


def send_lock_notice(email: str) -> None:
    """Job: tell the owner of the account with ``email`` (if there is one) that failed sign-ins
    locked it. Queued once per lock: by the failure that filled the limit."""
    _send(LOCKED, lambda found, session: _prepare_lock_notice(found, session, email), email=email)


Prepare = Callable[[Runtime, Session], tuple[uuid.UUID, EmailMessage] | None]


def _send(purpose: str, prepare: Prepare, *, email: str | None = None) -> None:
    """Prepare the message in a transaction (committed before sending: a mailed token must exist;
    an unsent one is superseded or simply expires), then hand it to the SMTP server."""
    found = runtime()
    try:
        with found.sessions() as session:
            prepared = prepare(found, session)
    except SQLAlchemyError as exc:
        events.emit(f"{purpose}_mail_failed", email=email, level=logging.WARNING)
        raise MailJobFailed(f"database error: {type(exc).__name__}") from None
    if prepared is None:
        events.emit(f"{purpose}_mail_skipped", email=email)
        return
    account_id, message = prepared
    try:
        deliver(found.settings, message)
    except (smtplib.SMTPException, OSError) as exc:
        events.emit(f"{purpose}_mail_failed", account_id=account_id, level=logging.WARNING)
        raise MailJobFailed(f"SMTP server did not take the message: {type(exc).__name__}") from None
    events.emit(f"{purpose}_mail_sent", account_id=account_id)


def _prepare_link(found: Runtime, session: Session, purpose: str, email: str) -> tuple[uuid.UUID, EmailMessage] | None:
    """A reset or verification message with a new token, or None: nothing to send."""
    account = queries.account_by_email(session, email=email)
    if account is None or (purpose == recovery.VERIFY and account.email_verified_at is not None):
        return None
    ttl = found.settings.account_token_ttl_seconds
    token = recovery.issue(session, account, purpose, now=now(), ttl_seconds=ttl)
    message = compose(found, purpose, account, {"link": link(found.settings, purpose, token), "minutes": ttl // 60})
    session.commit()
    return account.id, message


def _prepare_alert(found: Runtime, session: Session, family_id: uuid.UUID) -> tuple[uuid.UUID, EmailMessage] | None:
    record = queries.login_session(session, family_id=family_id)
    account = queries.account_by_id(session, account_id=record.account_id) if record else None
    if record is None or account is None:  # deleted since
        return None
    token = recovery.issue(
        session, account, ALERT, now=now(), ttl_seconds=recovery.ALERT_TTL_SECONDS, family_id=family_id
    )
    context = {
        "when": record.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "client": record.client,
        "network": record.network,
        "link": link(found.settings, ALERT, token),
        "days": recovery.ALERT_TTL_SECONDS // 86_400,
    }
    message = compose(found, ALERT, account, context)
    session.commit()
    return account.id, message


def _prepare_lock_notice(found: Runtime, session: Session, email: str) -> tuple[uuid.UUID, EmailMessage] | None:
    account = queries.account_by_email(session, email=email)
    if account is None:
        return None
    settings = found.settings
    context = {"failures": settings.login_max_failures, "minutes": max(1, settings.login_window_seconds // 60)}
    return account.id, compose(found, LOCKED, account, context)


def link(settings: MailWorkerSettings, purpose: str, token: str) -> str:
    return f"{str(settings.public_url).rstrip('/')}/{PAGES[purpose]}#token={token}"


def compose(found: Runtime, purpose: str, account: Account, context: dict[str, object]) -> EmailMessage:
    """The message: plain-text and HTML bodies from the templates ``<purpose>.txt`` and
    ``<purpose>.html``, given ``context`` and the account's name."""
    settings = found.settings
    context = {**context, "name": account.name}
    message = EmailMessage()
    message["Subject"] = SUBJECTS[purpose]
    message["From"] = settings.mail_from
    message["To"] = Address(display_name=account.name, addr_spec=account.email)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=parseaddr(settings.mail_from)[1].rpartition("@")[2] or None)
    message.set_content(found.templates.get_template(f"{purpose}.txt").render(context))
    message.add_alternative(found.templates.get_template(f"{purpose}.html").render(context), subtype="html")
    return message


def deliver(settings: MailWorkerSettings, message: EmailMessage) -> None:
    """Hand ``message`` to the configured SMTP server (STARTTLS, TLS or plain; login if configured)."""
    timeout = settings.smtp_timeout_seconds
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if settings.smtp_security == "tls":
        client = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    with client:
        if settings.smtp_security == "starttls":
            client.starttls(context=context)
        if settings.smtp_username is not None and settings.smtp_password is not None:
            client.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        client.send_message(message)
