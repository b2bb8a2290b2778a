"""Account-recovery mail, out of the request path: an RQ queue on the service's Redis and the jobs
the mail worker (:mod:`wharf_auth.worker`) runs.

A request only enqueues the address (:func:`enqueue`); the worker looks the account up, issues the
token (:mod:`wharf_auth.recovery`), renders the plain-text and HTML bodies from
``templates/mail/`` and hands the message to the SMTP server. So the token never passes through
Redis, and a password-reset request costs the same whether the account exists or not. A job that
fails (SMTP down, worker killed mid-job) is retried with growing pauses; each attempt issues a new
token, which supersedes the one of the attempt before. Jobs are JSON (RQ's JSONSerializer), never
pickles, and name no address or token in their description, which RQ logs.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import uuid
from dataclasses import dataclass
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
SUBJECTS = {recovery.RESET: "Reset your Wharf password", recovery.VERIFY: "Confirm your email address for Wharf"}
PAGES = {recovery.RESET: "reset-password", recovery.VERIFY: "verify-email"}


class MailJobFailed(Exception):
    """The database or the SMTP server failed the job (RQ retries it). Its message, which RQ logs,
    names neither the address nor the token, unlike the errors it replaces (SQLAlchemy's carry
    the statement's parameters)."""


def queue(connection: redis.Redis) -> Queue:
    return Queue(QUEUE, connection=connection, serializer=JSONSerializer)


def enqueue(connection: redis.Redis, purpose: str, email: str) -> None:
    """Queue the mail of ``purpose`` for ``email`` (raises redis.RedisError when Redis is down)."""
    job = send_password_reset if purpose == recovery.RESET else send_email_verification
    queue(connection).enqueue(
        job,
        email,
        description=f"{purpose} mail",  # RQ logs it; the default would show the address
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
    _send(recovery.RESET, email)


def send_email_verification(email: str) -> None:
    """Job: mail a verification link to the account with ``email``, unless it is verified already."""
    _send(recovery.VERIFY, email)


def _send(purpose: str, email: str) -> None:
    found = runtime()
    try:
        prepared = _prepare(found, purpose, email)
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


def _prepare(found: Runtime, purpose: str, email: str) -> tuple[uuid.UUID, EmailMessage] | None:
    """The account's id and its message with a new token (committed), or None: nothing to send."""
    with found.sessions() as session:
        account = queries.account_by_email(session, email=email)
        if account is None or (purpose == recovery.VERIFY and account.email_verified_at is not None):
            return None
        token = recovery.issue(
            session, account, purpose, now=now(), ttl_seconds=found.settings.account_token_ttl_seconds
        )
        message = compose(found, purpose, account, token)
        session.commit()  # before sending: a mailed token must exist; an unsent one is superseded on retry
        return account.id, message


def link(settings: MailWorkerSettings, purpose: str, token: str) -> str:
    return f"{str(settings.public_url).rstrip('/')}/{PAGES[purpose]}#token={token}"


def compose(found: Runtime, purpose: str, account: Account, token: str) -> EmailMessage:
    """The message: plain-text and HTML bodies from the templates ``<purpose>.txt`` and ``<purpose>.html``."""
    settings = found.settings
    context = {
        "name": account.name,
        "link": link(settings, purpose, token),
        "minutes": settings.account_token_ttl_seconds // 60,
    }
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
