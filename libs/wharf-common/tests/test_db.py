from __future__ import annotations

import os
import signal
import socket
import time
import warnings
from collections.abc import Iterator

import pytest

from wharf_common.db import WATCHDOG, Watchdog


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Our end of a connection and the server's."""
    ours, server = socket.socketpair()
    yield ours, server
    ours.close()
    server.close()


def test_an_overdue_call_has_its_socket_shut_down(pair: tuple[socket.socket, socket.socket]) -> None:
    watchdog = Watchdog(interval=0.01)
    ours, _ = pair
    ours.settimeout(5)
    started = time.monotonic()
    with watchdog.guard(ours.fileno(), 0.1):
        assert ours.recv(1) == b""  # the server never answers: the watchdog ends the wait
    assert 0.1 <= time.monotonic() - started < 1


def test_a_call_that_ends_in_time_keeps_its_connection(pair: tuple[socket.socket, socket.socket]) -> None:
    watchdog = Watchdog(interval=0.01)
    ours, server = pair
    with watchdog.guard(ours.fileno(), 0.1):
        server.sendall(b"x")
        assert ours.recv(1) == b"x"
    time.sleep(0.3)  # past the deadline the call had
    server.sendall(b"y")
    assert ours.recv(1) == b"y"


def test_a_child_forked_while_the_watchdog_held_its_lock_still_guards_calls() -> None:
    ours, _server = socket.socketpair()
    # The parent's watchdog thread is running and holds its lock at the moment of the fork (as
    # gunicorn's master may when it forks a worker; Python >= 3.12 warns about forking with threads).
    with WATCHDOG.guard(ours.fileno(), 60), WATCHDOG._lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not pytest-timeout's handler
            signal.alarm(5)  # a deadlocked child dies of SIGALRM instead of hanging the test
            child_end, _ = socket.socketpair()
            with WATCHDOG.guard(child_end.fileno(), 0.05):
                os._exit(0 if child_end.recv(1) == b"" else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ours.close()
    _server.close()
