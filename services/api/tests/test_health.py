from __future__ import annotations

import socket

from flask.testing import FlaskClient

from wharf_api import create_app
from wharf_api.settings import ApiSettings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthz_and_readyz(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"postgres": "ok", "redis": "ok"}


def test_readyz_names_the_failing_dependency(api_settings: ApiSettings) -> None:
    port = _closed_port()
    broken = api_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    client = create_app(broken).test_client()
    assert client.get("/healthz").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["failing"] == ["redis"]
    assert "Retry-After" in response.headers

    no_db = api_settings.model_copy(update={"database_url": f"postgresql://api@127.0.0.1:{port}/wharf"})
    assert create_app(no_db).test_client().get("/readyz").get_json()["failing"] == ["postgres"]


def test_request_id_is_echoed_when_well_formed(client: FlaskClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc12345-xyz"}).headers["X-Request-ID"] == "abc12345-xyz"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id!"}).headers["X-Request-ID"]
    assert len(generated) == 32
