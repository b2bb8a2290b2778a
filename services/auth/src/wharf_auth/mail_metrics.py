"""The mail queue as Prometheus metrics: ``python -m wharf_auth.mail_metrics`` serves them on
port 9000 (compose service ``mail-metrics``, profile ``observability``).

Read from Redis at each scrape through RQ's public API, with the mail worker's Redis user (RQ's
keys only), so nothing runs between scrapes; read only (the worker cleans RQ's registries up). A
process of its own rather than a thread in the worker: RQ's worker forks its scheduler, and
forking a process that runs threads can leave a lock held in the child.

- ``wharf_mail_jobs{state}``: jobs queued, scheduled (waiting between two delivery attempts),
  started, and failed (given up after every retry; kept for 7 days);
- ``wharf_mail_oldest_job_age_seconds``: since the oldest mail not yet delivered was requested;
- ``wharf_mail_workers``: RQ workers serving the queue;
- ``wharf_mail_queue_up``: 1 when Redis answered this scrape, else 0 (and nothing else).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import RedisDsn, SecretStr
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from wharf_auth import mail
from wharf_common.logs import configure_logging
from wharf_common.metrics_server import serve_until_stopped
from wharf_common.settings import ServerSettings, load_settings

PORT = 9000  # as the services' metrics (wharf_common.gunicorn_conf.METRICS_PORT)
# Jobs read per state to find the oldest: a bound on a scrape's work when the queue is long. The
# queue and the registries keep their oldest entries first, so a long backlog's oldest are read.
OLDEST_SCAN_LIMIT = 500

log = logging.getLogger(__name__)


class MailMetricsSettings(ServerSettings):
    service_name: str = "mail-metrics"
    redis_url: RedisDsn
    redis_username: str | None = None
    redis_password: SecretStr | None = None


def created_at(job: Job) -> datetime | None:
    if job.created_at is None:
        return None
    return job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=UTC)  # RQ stores UTC


class MailQueueCollector(Collector):
    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("wharf_mail_queue_up", "1 if Redis answered this scrape, else 0.")
        try:
            families = list(self._queue_metrics())
        except redis.RedisError as exc:
            log.warning("mail_queue_unreadable", extra={"error": type(exc).__name__})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _queue_metrics(self) -> Iterator[GaugeMetricFamily]:
        queue = self.queue
        registries = {
            "scheduled": queue.scheduled_job_registry,
            "started": queue.started_job_registry,
            "failed": queue.failed_job_registry,
        }
        jobs = GaugeMetricFamily("wharf_mail_jobs", "Mail jobs by state.", labels=["state"])
        jobs.add_metric(["queued"], queue.count)
        for state, registry in registries.items():
            jobs.add_metric([state], registry.get_job_count(cleanup=False))
        yield jobs

        pending = queue.get_job_ids(0, OLDEST_SCAN_LIMIT)
        for state in ("scheduled", "started"):
            pending += registries[state].get_job_ids(0, OLDEST_SCAN_LIMIT - 1, cleanup=False)
        found = Job.fetch_many(pending, connection=queue.connection, serializer=JSONSerializer)
        times = [t for t in (created_at(job) for job in found if job is not None) if t is not None]
        oldest = GaugeMetricFamily(
            "wharf_mail_oldest_job_age_seconds",
            "Seconds since the oldest mail not yet delivered was requested (0 when none waits).",
        )
        oldest.add_metric([], (datetime.now(UTC) - min(times)).total_seconds() if times else 0.0)
        yield oldest

        workers = GaugeMetricFamily("wharf_mail_workers", "RQ workers serving the mail queue.")
        workers.add_metric([], SimpleWorker.count(queue=queue))
        yield workers


def registry_for(connection: redis.Redis) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MailQueueCollector(mail.queue(connection)))
    return registry


def main() -> None:
    settings = load_settings(MailMetricsSettings)
    configure_logging(settings.service_name, settings.log_level)
    connection = redis.Redis.from_url(
        str(settings.redis_url),
        username=settings.redis_username,
        password=settings.redis_password.get_secret_value() if settings.redis_password else None,
        socket_timeout=2,  # below Prometheus's scrape timeout (5 s)
        socket_connect_timeout=2,
    )
    serve_until_stopped(registry_for(connection), PORT)


if __name__ == "__main__":
    main()
