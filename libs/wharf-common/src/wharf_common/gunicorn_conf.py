"""gunicorn settings shared by the services (``gunicorn -c python:wharf_common.gunicorn_conf``),
from the same typed settings as the app (:class:`~wharf_common.settings.ServerSettings`)."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from wharf_common.settings import ServerSettings, load_settings

PORT = 8000
METRICS_PORT = 9000  # every worker's metrics, summed (wharf_common.metrics_server); never routed by nginx
METRICS_DIR = Path("/tmp/wharf-metrics")  # noqa: S108 - a tmpfs in the containers

settings = load_settings(ServerSettings)

bind = f"0.0.0.0:{PORT}"
workers = settings.gunicorn_workers
threads = settings.gunicorn_threads
# sync (one request at a time per process) or gthread, either one closing its listener as soon as
# it stops (see gunicorn_worker). Sync by default: the shorter tail (bench/README.md, worker model).
worker_class = f"wharf_common.gunicorn_worker.Draining{'Thread' if threads > 1 else 'Sync'}Worker"
timeout = settings.gunicorn_timeout
# SIGTERM: stop accepting, let in-flight requests finish for up to this long.
graceful_timeout = 20
# Longer than nginx's upstream keepalive_timeout, so nginx closes idle connections first.
keepalive = 75
reload = settings.gunicorn_reload
# The app (and its configuration check) loads once in the master, so a bad setting fails at once;
# with reload it loads in each worker, since the master's copy never reloads.
preload_app = not reload
# The root filesystem is read-only; heartbeat files live in shared memory.
worker_tmp_dir = "/dev/shm"  # noqa: S108 - gunicorn heartbeat files, not data
# No gunicorn access log: nginx logs every request, the app what only it knows (wharf_common.web). Any
# logconfig* setting would switch gunicorn's access log back on.
accesslog = None
errorlog = "-"
loglevel = settings.log_level.lower()

# Prometheus multiprocess mode: set before the app (and prometheus_client) is imported, which
# preload_app does right after this file is read. Emptied at every master start.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)
shutil.rmtree(METRICS_DIR, ignore_errors=True)
METRICS_DIR.mkdir(parents=True)

_metrics_server: subprocess.Popen[bytes] | None = None


def when_ready(server: Any) -> None:
    """Start the process that serves every worker's metrics on the internal metrics port."""
    global _metrics_server
    _metrics_server = subprocess.Popen([sys.executable, "-m", "wharf_common.metrics_server", str(METRICS_PORT)])  # noqa: S603


def on_exit(server: Any) -> None:
    if _metrics_server is not None:
        _metrics_server.terminate()
        _metrics_server.wait(timeout=5)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def pre_fork(server: Any, worker: Any) -> None:
    """The preloaded app stays shared with the workers: without this, a worker's first full garbage
    collection writes into every object the master created, and the kernel copies each page it
    touches (copy-on-write), ~37 MiB of the api's per worker (measured). The standard library's
    remedy (the `gc` module's docs): freeze the master's objects right before forking."""
    gc.freeze()


def post_fork(server: Any, worker: Any) -> None:
    """Connections opened in the master must not be shared with forked workers."""
    from wharf_common.db import dispose_engines_after_fork

    dispose_engines_after_fork()
