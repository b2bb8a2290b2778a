"""The mail queue's metrics (wharf_auth.mail_metrics) read from a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rq.job import Job
from rq.serializers import JSONSerializer

from wharf_auth import mail, mail_metrics


@pytest.fixture
def connection(redis_url: str) -> Iterator[redis.Redis]:
    """A database of its own (the other auth tests use the queue in database 0)."""
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/7")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def scrape(connection: redis.Redis) -> dict[str, float]:
    """Every sample of one scrape, by name and labels (``name{label=value}``)."""
    text = generate_latest(mail_metrics.registry_for(connection)).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_an_empty_queue(connection: redis.Redis) -> None:
    assert scrape(connection) == {
        "wharf_mail_queue_up": 1,
        "wharf_mail_jobs{state=queued}": 0,
        "wharf_mail_jobs{state=scheduled}": 0,
        "wharf_mail_jobs{state=started}": 0,
        "wharf_mail_jobs{state=failed}": 0,
        "wharf_mail_oldest_job_age_seconds": 0,
        "wharf_mail_workers": 0,
    }


def test_jobs_by_state_and_the_oldest_waiting_one(connection: redis.Redis) -> None:
    mail.enqueue(connection, "reset", "someone@example.com")
    mail.enqueue(connection, "verify", "someone-else@example.com")
    queue = mail.queue(connection)
    # A job requested ten minutes ago, waiting for its next delivery attempt (as after a failure).
    waiting = Job.create(mail.send_password_reset, args=("third@example.com",), connection=connection,
                         serializer=JSONSerializer, origin=queue.name)  # fmt: skip
    waiting.created_at = datetime.now(UTC) - timedelta(minutes=10)
    waiting.save()
    queue.schedule_job(waiting, datetime.now(UTC) + timedelta(minutes=5))
    given_up = Job.create(mail.send_password_reset, args=("fourth@example.com",), connection=connection,
                          serializer=JSONSerializer, origin=queue.name)  # fmt: skip
    given_up.save()
    queue.failed_job_registry.add(given_up, exc_string="SMTP refused")

    samples = scrape(connection)
    assert samples["wharf_mail_queue_up"] == 1
    assert samples["wharf_mail_jobs{state=queued}"] == 2
    assert samples["wharf_mail_jobs{state=scheduled}"] == 1
    assert samples["wharf_mail_jobs{state=failed}"] == 1
    assert 600 <= samples["wharf_mail_oldest_job_age_seconds"] < 660  # the scheduled one, not a given-up one


def test_a_redis_that_does_not_answer_is_reported_not_raised(connection: redis.Redis) -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    assert scrape(unreachable) == {"wharf_mail_queue_up": 0}
