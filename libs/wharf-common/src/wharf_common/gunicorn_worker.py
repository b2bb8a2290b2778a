"""gunicorn's sync and threaded workers, but a stopping worker stops listening at once.

On SIGTERM the stock gthread worker only stops *accepting*: its listening socket stays open until
the worker exits (after in-flight requests and a short keep-alive linger), so the kernel keeps
completing handshakes for connections nobody will read. nginx sends a request on such a
connection, and at exit it is reset: a GET is retried on another replica, but a POST or PATCH
(already sent, so never re-sent) becomes a 502. This worker takes what the kernel has already
queued for it and then closes its listener, so that once every worker of the replica has done so,
new connections are refused outright and nginx tries the next replica, for every method. The sync
worker has the same gap (its listener stays open until the process exits): it serves what is queued
once its loop ends, then closes the listener.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Iterable

from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker


def serve_queued_then_close(listeners: Iterable[socket.socket], take: Callable[[socket.socket], bool]) -> None:
    """Connections already queued for each listener are served like any other (``take`` accepts one
    and says whether it got it), then the listener is closed: no more are taken in."""
    for listener in listeners:
        while select.select([listener], [], [], 0)[0] and take(listener):
            pass
        listener.close()


class DrainingThreadWorker(ThreadWorker):
    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            serve_queued_then_close(self.sockets, self._take)

    def _take(self, listener: socket.socket) -> bool:
        before = self.nr_conns
        self.accept(listener)
        return self.nr_conns != before  # False: another worker took it


class DrainingSyncWorker(SyncWorker):
    def run(self) -> None:
        super().run()  # returns once the worker is told to stop
        serve_queued_then_close(self.sockets, self._take)

    def _take(self, listener: socket.socket) -> bool:
        try:
            self.accept(listener)
        except OSError:  # another worker took it, or the client went away
            return False
        return True
