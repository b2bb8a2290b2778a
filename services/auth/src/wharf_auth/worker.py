"""The mail worker: ``python -m wharf_auth.worker`` runs RQ's worker on the ``auth-mail`` queue.

Same image and settings as the auth service plus the SMTP server's (:class:`MailWorkerSettings`),
and a Redis user of its own that may touch RQ's keys only. One process, no fork per job (RQ's
SimpleWorker): a job is a database transaction and one SMTP conversation. RQ's scheduler runs
beside it and puts jobs whose retry pause is over back on the queue. RQ's maintenance step also
sweeps auth's old rows (account events past their retention; :mod:`wharf_auth.housekeeping`).

Health: after each heartbeat it has sent to Redis (every ``WORKER_TTL_SECONDS - 15`` s while idle)
the worker touches ``HEARTBEAT_FILE``; the container's health check reads that file's age with
bash and ``stat`` (compose and the Kubernetes probes alike), so no interpreter starts per check.
"""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path

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
# On the container's tmpfs; the health check passes while it is under 90 s old.
HEARTBEAT_FILE = Path("/tmp/wharf-worker-heartbeat")  # noqa: S108 - a tmpfs (compose) or emptyDir (k8s)


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
    """RQ's SimpleWorker that also touches ``heartbeat_file`` after each heartbeat it has sent, and
    sweeps auth's old rows (:mod:`wharf_auth.housekeeping`) in RQ's own maintenance step: at start,
    then every ``maintenance_interval`` (ten minutes) while it runs. Each replica sweeps; a sweep is
    idempotent."""

    heartbeat_file = HEARTBEAT_FILE

    def heartbeat(self, timeout: int | None = None, pipeline: redis.client.Pipeline | None = None) -> None:
        super().heartbeat(timeout, pipeline)
        if pipeline is None:  # sent now (a pipeline's commands go later, with the pipeline)
            self.heartbeat_file.touch()

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        found = mail.runtime()
        housekeeping.sweep_logged(found.sessions, found.settings)


def make_worker(connection: redis.Redis, heartbeat_file: Path = HEARTBEAT_FILE) -> MailWorker:
    logging.getLogger("rq.worker").addFilter(WITHHOLD_JOB_ARGUMENTS)  # once: addFilter skips a repeat
    worker = MailWorker(
        [mail.queue(connection)],
        connection=connection,
        name=f"{socket.gethostname()}.{uuid.uuid4().hex[:8]}",
        serializer=JSONSerializer,
        worker_ttl=WORKER_TTL_SECONDS,
        log_job_description=False,
    )
    worker.heartbeat_file = heartbeat_file
    return worker


def main() -> None:
    settings = load_settings(MailWorkerSettings)
    configure_logging(settings.service_name, settings.log_level)
    mail.configure(settings)
    make_worker(connect(settings)).work(with_scheduler=True, logging_level=settings.log_level)


if __name__ == "__main__":
    main()
