"""The mail worker: ``python -m wharf_auth.worker`` runs RQ's worker on the ``auth-mail`` queue;
``python -m wharf_auth.worker --check`` is its health check (exit 0 while a worker of this host
has sent RQ's heartbeat to Redis within the last ``WORKER_TTL_SECONDS``).

Same image and settings as the auth service plus the SMTP server's (:class:`MailWorkerSettings`),
and a Redis user of its own that may touch RQ's keys only. One process, no fork per job (RQ's
SimpleWorker): a job is a database transaction and one SMTP conversation. RQ's scheduler runs
beside it and puts jobs whose retry pause is over back on the queue. RQ's maintenance step also
sweeps auth's old rows (account events past their retention; :mod:`wharf_auth.housekeeping`).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import uuid
from datetime import UTC, datetime, timedelta

import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from wharf_auth import housekeeping, mail
from wharf_auth.settings import MailWorkerSettings
from wharf_common.logs import configure_logging
from wharf_common.settings import load_settings

# RQ's worker key expires this long after its last heartbeat; it waits for a job at most
# WORKER_TTL_SECONDS - 15 s at a time, so a blocked read returns well within the socket timeout.
WORKER_TTL_SECONDS = 60
SOCKET_TIMEOUT_SECONDS = WORKER_TTL_SECONDS + 15


class WithholdJobArguments(logging.Filter):
    """RQ logs a failed job's arguments (an email address) as extra fields of the record, which the
    JSON log lines would show: they are replaced before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in ("arguments", "kwargs"):
            if hasattr(record, name):
                setattr(record, name, "[withheld]")
        return True


WITHHOLD_JOB_ARGUMENTS = WithholdJobArguments()


def connect(settings: MailWorkerSettings) -> redis.Redis:
    return redis.Redis.from_url(
        str(settings.redis_url),
        username=settings.redis_username,
        password=settings.redis_password.get_secret_value() if settings.redis_password else None,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


class MailWorker(SimpleWorker):
    """RQ's SimpleWorker that also sweeps auth's old rows (:mod:`wharf_auth.housekeeping`) in RQ's
    own maintenance step: at start, then every ``maintenance_interval`` (ten minutes) while it
    runs. Each replica sweeps; a sweep is idempotent."""

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        found = mail.runtime()
        housekeeping.sweep_logged(found.sessions, found.settings)


def make_worker(connection: redis.Redis) -> SimpleWorker:
    logging.getLogger("rq.worker").addFilter(WITHHOLD_JOB_ARGUMENTS)  # once: addFilter skips a repeat
    return MailWorker(
        [mail.queue(connection)],
        connection=connection,
        name=f"{socket.gethostname()}.{uuid.uuid4().hex[:8]}",
        serializer=JSONSerializer,
        worker_ttl=WORKER_TTL_SECONDS,
        log_job_description=False,
    )


def healthy(connection: redis.Redis, hostname: str) -> bool:
    """A worker of ``hostname`` is registered on the queue and has sent a heartbeat recently."""
    recent = datetime.now(UTC) - timedelta(seconds=WORKER_TTL_SECONDS)
    return any(
        worker.hostname == hostname and worker.last_heartbeat is not None and worker.last_heartbeat >= recent
        for worker in SimpleWorker.all(queue=mail.queue(connection), serializer=JSONSerializer)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 0 if this host's worker is alive, else 1")
    args = parser.parse_args(argv)
    settings = load_settings(MailWorkerSettings)
    connection = connect(settings)
    if args.check:
        sys.exit(0 if healthy(connection, socket.gethostname()) else 1)
    configure_logging(settings.service_name, settings.log_level)
    mail.configure(settings)
    make_worker(connection).work(with_scheduler=True, logging_level=settings.log_level)


if __name__ == "__main__":
    main()
