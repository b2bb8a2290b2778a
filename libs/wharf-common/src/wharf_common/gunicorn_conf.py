"""gunicorn settings shared by the services (``gunicorn -c python:wharf_common.gunicorn_conf``).

Every value comes from the environment so ops tune it without a rebuild.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# gthread that stops listening as soon as it is told to stop (see gunicorn_worker).
worker_class = "wharf_common.gunicorn_worker.DrainingThreadWorker" if threads > 1 else "sync"
# Hard kill of a stuck worker; above nginx's proxy_read_timeout so nginx answers first.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# SIGTERM: stop accepting, let in-flight requests finish for up to this long.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
# Longer than nginx's upstream keepalive_timeout so nginx closes idle connections first.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "75"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
# Development only (`make dev`, deploy/compose/compose.dev.yaml): a worker restarts when a source
# file it loaded changes. The app then loads in each worker, since the master's copy never reloads.
reload = os.environ.get("GUNICORN_RELOAD", "0") == "1"
# Otherwise the app (and its configuration check) loads once in the master: a bad setting fails at once.
preload_app = not reload
# The root filesystem is read-only; heartbeat files live in shared memory.
worker_tmp_dir = "/dev/shm"  # noqa: S108 - gunicorn heartbeat files, not data
# No gunicorn access log: the app writes one JSON line per request (wharf_common.web). Any
# logconfig* setting would switch gunicorn's access log back on (a second line per request).
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


# Prometheus multiprocess mode: set before the app (and prometheus_client) is imported, which
# preload_app does right after this file is read. Emptied at every master start.
metrics_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", "/tmp/wharf-metrics"))  # noqa: S108 - tmpfs
shutil.rmtree(metrics_dir, ignore_errors=True)
metrics_dir.mkdir(parents=True)
metrics_port = int(os.environ.get("METRICS_PORT", "9000"))


_metrics_server: subprocess.Popen[bytes] | None = None


def when_ready(server: Any) -> None:
    """Start the process that serves every worker's metrics on the internal metrics port."""
    global _metrics_server
    _metrics_server = subprocess.Popen([sys.executable, "-m", "wharf_common.metrics_server"])


def on_exit(server: Any) -> None:
    if _metrics_server is not None:
        _metrics_server.terminate()
        _metrics_server.wait(timeout=5)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_fork(server: Any, worker: Any) -> None:
    """Connections opened in the master must not be shared with forked workers."""
    from wharf_common.db import dispose_engines_after_fork

    dispose_engines_after_fork()
