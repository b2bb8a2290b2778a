"""The in-memory revocation set: what it rejects, how it merges pushes and re-syncs, and that it
fails closed when it cannot re-sync."""

from __future__ import annotations

import pytest

from wharf_common.revocation import Revocation, RevocationSet, RevocationsUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def claims(**overrides: object) -> dict[str, object]:
    return {"jti": "j1", "sub": "acct", "fid": "fam", "iat": 100.5, **overrides}


def make(rows: list[Revocation], clock: Clock, **kwargs: float) -> RevocationSet:
    revocations = RevocationSet(lambda: list(rows), None, clock=clock, **kwargs)
    revocations._ensure_started()  # initial sync now; the background thread sleeps between re-syncs
    return revocations


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_each_kind_of_revocation(clock: Clock) -> None:
    rows = [
        Revocation("jti", "dead-token", 9e9),
        Revocation("family", "dead-session", 9e9),
        Revocation("account", "changed-password", 9e9, issued_before=200.0),
    ]
    revocations = make(rows, clock)
    try:
        assert not revocations.is_revoked(claims())
        assert revocations.is_revoked(claims(jti="dead-token"))
        assert revocations.is_revoked(claims(fid="dead-session"))
        assert revocations.is_revoked(claims(sub="changed-password", iat=199.999))
        assert not revocations.is_revoked(claims(sub="changed-password", iat=200.0))  # issued after the change
    finally:
        revocations.stop()


def test_a_push_survives_a_resync_that_started_before_it(clock: Clock) -> None:
    rows: list[Revocation] = []
    revocations = make(rows, clock, sync_interval=3600)
    try:
        revocations.add(Revocation("jti", "pushed", 9e9))
        revocations.sync()  # auth does not show it yet (the read raced the commit)
        assert revocations.is_revoked(claims(jti="pushed"))
        clock.now += 10
        rows.append(Revocation("jti", "pushed", 9e9))
        revocations.sync()
        assert revocations.is_revoked(claims(jti="pushed"))
    finally:
        revocations.stop()


def test_stale_set_fails_closed_and_recovers(clock: Clock) -> None:
    healthy = True

    def loader() -> list[Revocation]:
        if not healthy:
            raise ConnectionError("postgres is down")
        return []

    revocations = RevocationSet(loader, None, clock=clock, sync_interval=3600, max_staleness=30)
    revocations._ensure_started()
    try:
        assert not revocations.is_revoked(claims())
        healthy = False
        clock.now += 29
        with pytest.raises(ConnectionError):
            revocations.sync()
        assert not revocations.is_revoked(claims())  # 29 s old: still trusted
        clock.now += 2
        with pytest.raises(RevocationsUnavailable):
            revocations.is_revoked(claims())
        healthy = True
        revocations.sync()
        assert not revocations.is_revoked(claims())
    finally:
        revocations.stop()


def test_never_synced_is_unavailable(clock: Clock) -> None:
    def loader() -> list[Revocation]:
        raise ConnectionError("postgres is down")

    revocations = RevocationSet(loader, None, clock=clock, sync_interval=3600)
    try:
        with pytest.raises(RevocationsUnavailable):
            revocations.is_revoked(claims())
    finally:
        revocations.stop()


@pytest.mark.parametrize(
    "message",
    [
        b"not json",
        b'{"kind": "jti"}',
        b'{"kind": "bogus", "value": "x", "exp": 1}',
        b'{"kind": "account", "value": "x", "exp": 1}',
        b'{"kind": "jti", "value": "x", "exp": 1, "issued_before": 5}',
    ],
)
def test_malformed_messages_are_ignored(message: bytes) -> None:
    assert Revocation.from_message(message) is None


def test_message_round_trip() -> None:
    revocation = Revocation("account", "a", 10.0, issued_before=5.5)
    assert Revocation.from_message(revocation.to_message()) == revocation


def test_readers_never_see_a_half_built_set_during_resyncs(clock: Clock) -> None:
    import threading

    rows = [Revocation("jti", f"token-{i}", 9e9) for i in range(20_000)]
    revocations = make(rows, clock, sync_interval=3600)
    stop = threading.Event()

    def resync_forever() -> None:
        while not stop.is_set():
            revocations.sync()

    thread = threading.Thread(target=resync_forever)
    thread.start()
    try:
        misses = sum(not revocations.is_revoked(claims(jti="token-19999")) for _ in range(20_000))
    finally:
        stop.set()
        thread.join()
        revocations.stop()
    assert misses == 0


def test_an_unbroken_subscription_keeps_an_old_set_fresh(clock: Clock) -> None:
    revocations = make([], clock, sync_interval=3600, max_staleness=30)
    try:
        revocations._subscribed_at = clock.now - 1  # subscribed before the last re-sync
        clock.now += 120
        assert revocations.is_fresh()
        revocations._subscribed_at = None  # the channel broke
        assert not revocations.is_fresh()
        revocations._subscribed_at = clock.now  # re-subscribed, but not re-synced since
        assert not revocations.is_fresh()
    finally:
        revocations.stop()


@pytest.mark.parametrize(
    ("body", "loaded"),
    [
        (b'{"revocations": [{"kind": "jti", "value": "j1", "exp": 5.0, "issued_before": null}]}', 1),
        (b'{"revocations": [{"kind": "account", "value": "a", "exp": 5.0}]}', None),  # no issued_before
        (b'{"revocations": {"kind": "jti"}}', None),
        (b"[]", None),
        (b"not json", None),
    ],
)
def test_the_loader_takes_auths_list_whole_or_not_at_all(body: bytes, loaded: int | None) -> None:
    """A malformed list must fail the re-sync (the set then goes stale and fails closed), never
    replace the set with a partial one."""
    import http.server
    import threading

    from wharf_common.revocation import loader

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        load = loader(f"http://127.0.0.1:{server.server_port}/internal/revocations")
        if loaded is None:
            with pytest.raises(ValueError):  # noqa: PT011 - malformed JSON or a malformed list, both ValueError
                load()
        else:
            assert len(load()) == loaded
    finally:
        server.shutdown()
        server.server_close()
