"""Prometheus metrics of a service, correct across gunicorn workers.

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` is set (see :mod:`wharf_common.gunicorn_conf`) before
this module is imported: every worker writes its samples to files there, and the gunicorn master
serves the aggregate on ``gunicorn_conf.METRICS_PORT`` (9000), a port nginx never routes to. Without it (tests,
``flask`` commands) the metrics live in the process's default registry.

Label values are always from small fixed sets (route templates, not paths), so cardinality is bounded.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUEST_SECONDS = Histogram(
    "wharf_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and status (its _count is the request count).",
    ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DB_CONNECTIONS_IN_USE = Gauge(
    "wharf_db_pool_connections_in_use",
    "Database connections checked out of the pools (summed over live workers).",
    multiprocess_mode="livesum",
)
DB_CONNECTIONS_OPEN = Gauge(
    "wharf_db_pool_connections_open",
    "Database connections the pools hold open (summed over live workers).",
    multiprocess_mode="livesum",
)
CACHE_LOOKUPS = Counter("wharf_cache_lookups_total", "Cache lookups by kind and result.", ["kind", "result"])
TOKEN_VERIFICATIONS = Counter(
    "wharf_token_verifications_total",
    "Access-token checks by outcome (valid, invalid, revoked, unavailable).",
    ["outcome"],
)
AUTH_EVENTS = Counter(
    "wharf_auth_events_total",
    "Security events of the auth service (login_success, login_failure, login_locked, refresh, ...).",
    ["event"],
)
