"""The draining workers under a real gunicorn. Told to stop, the threaded one refuses new connections
at once (so nginx retries them on another replica, whatever the method) and still finishes what it
took; the sync one finishes its request, serves what was queued meanwhile, then refuses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SLOW_APP = """
import pathlib
import time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        pathlib.Path(__file__).with_name("serving").touch()  # the test waits for it, not for a guess
        time.sleep(4)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _workers(server: subprocess.Popen[bytes]) -> int:
    """How many worker processes gunicorn's arbiter has (its children, as Linux lists them)."""
    return len(Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split())


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def gunicorn(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    worker, threads = getattr(request, "param", ("DrainingThreadWorker", 2))
    (tmp_path / "slow_app.py").write_text(SLOW_APP)
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "--chdir", str(tmp_path), "--bind", f"127.0.0.1:{port}",
            "--worker-class", f"wharf_common.gunicorn_worker.{worker}",
            "--workers", "2", "--threads", str(threads), "--graceful-timeout", "20", "slow_app:app",
        ]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while _refused(port):
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        yield server, port
    finally:
        server.kill()
        server.wait(timeout=10)


def test_a_stopping_worker_refuses_new_connections_and_finishes_in_flight_ones(
    gunicorn: tuple[subprocess.Popen[bytes], int], tmp_path: Path
) -> None:
    server, port = gunicorn
    answers: list[bytes] = []

    def slow_request() -> None:
        answers.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/slow", timeout=30).read())

    in_flight = threading.Thread(target=slow_request)
    in_flight.start()
    _wait_for((tmp_path / "serving").exists, "the slow request never reached a worker")
    server.send_signal(signal.SIGTERM)

    refused_while_in_flight = False
    while in_flight.is_alive() and not refused_while_in_flight:
        refused_while_in_flight = _refused(port)
        time.sleep(0.05)
    in_flight.join(timeout=30)

    assert refused_while_in_flight  # the stock gthread worker keeps its listener open until it exits
    assert answers == [b"done"]
    assert server.wait(timeout=30) == 0


@pytest.mark.parametrize("gunicorn", [("DrainingSyncWorker", 1)], indirect=True)
def test_a_stopping_sync_worker_serves_what_was_queued_then_refuses(
    gunicorn: tuple[subprocess.Popen[bytes], int], tmp_path: Path
) -> None:
    server, port = gunicorn
    answers: list[bytes] = []

    def get(path: str) -> None:
        answers.append(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30).read())

    in_flight = threading.Thread(target=get, args=("/slow",))
    in_flight.start()
    _wait_for((tmp_path / "serving").exists, "the slow request never reached a worker")
    server.send_signal(signal.SIGTERM)
    _wait_for(lambda: _workers(server) == 1, "the idle worker did not stop")  # the busy one holds the listener
    queued = threading.Thread(target=get, args=("/",))
    queued.start()
    in_flight.join(timeout=30)
    queued.join(timeout=30)

    assert answers == [b"done", b"done"]  # the stock sync worker resets the queued connection
    assert server.wait(timeout=30) == 0
    assert _refused(port)


FREEZE_APP = """
import gc

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(gc.get_freeze_count()).encode()]
"""


def test_the_preloaded_app_is_frozen_before_the_workers_fork(tmp_path: Path) -> None:
    """gunicorn_conf's pre_fork hook: a worker's garbage collections leave the master's objects alone
    (gc.freeze), so the pages holding them stay shared instead of being copied into every worker."""
    (tmp_path / "freeze_app.py").write_text(FREEZE_APP)
    (tmp_path / "hooks.py").write_text("from wharf_common.gunicorn_conf import pre_fork  # noqa: F401\n")
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "--chdir", str(tmp_path), "--config", "python:hooks", "--preload",
            "--bind", f"127.0.0.1:{port}", "--workers", "1", "freeze_app:app",
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while _refused(port):
            assert server.poll() is None, "gunicorn exited (its error is above)"
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        frozen = int(urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read())
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert frozen > 1000, "the worker garbage-collects the objects it shares with the master"
