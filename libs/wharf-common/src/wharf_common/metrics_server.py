"""Serve the summed metrics of every gunicorn worker on the port given as the first argument.

Started by the gunicorn master as a child process (see :mod:`wharf_common.gunicorn_conf`), not as
a thread in the master: the master forks workers, and forking a process that runs threads can
leave a lock held in the child.
"""

from __future__ import annotations

import signal
import sys
import threading

from prometheus_client import CollectorRegistry, multiprocess, start_http_server


def serve_until_stopped(registry: CollectorRegistry, port: int) -> None:
    """Serve ``registry`` on ``port`` (all addresses) until SIGTERM or SIGINT."""
    server, _thread = start_http_server(port, registry=registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()


def main() -> None:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # reads PROMETHEUS_MULTIPROC_DIR
    serve_until_stopped(registry, int(sys.argv[1]))


if __name__ == "__main__":
    main()
