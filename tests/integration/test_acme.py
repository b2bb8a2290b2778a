"""Certificates that renew themselves (compose profile `acme`), offline against Pebble, Let's
Encrypt's ACME test server: the first start obtains the edge's certificate over HTTP-01 through
nginx's plain listener, a renewal under load through the TLS listener fails no request and reloads
nothing, and a refusing CA is named with its reason while the edge keeps its certificate.

One compose project of their own (``$WHARF_IT_PROJECT-acme``): the stack with the profile on plus
tests/integration/acme/compose.yaml (Pebble, and the host names nginx answers to on Pebble's network).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from requests.adapters import HTTPAdapter

from wharf_common.devsecrets import self_signed_certificate

from .conftest import ROOT, Stack, composed_stack, docker, new_stack
from .load import Load, Outcomes, is_success

pytestmark = [pytest.mark.integration, pytest.mark.own_project(minutes=1.4)]

NAMES = ("wharf.test", "www.wharf.test")  # nginx's aliases on Pebble's network
REFUSED = "refused.test"  # on Pebble's block list (tests/integration/acme/pebble-config.json)
OVERLAY = "tests/integration/acme/compose.yaml"


@dataclass(frozen=True)
class Acme:
    stack: Stack
    pebble_root: Path  # the root Pebble issues under (made new each time Pebble starts)

    def exec(self, *command: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        settings = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
        result = self.stack.compose("exec", "-T", *settings, "acme", *command, check=False, timeout=300)
        return result.returncode, result.stdout + result.stderr

    def logs(self) -> str:
        return self.stack.compose("logs", "--no-color", "--no-log-prefix", "acme").stdout

    def served(self, server_name: str = NAMES[0]) -> x509.Certificate:
        """The certificate a new TLS connection to the HTTPS listener gets, verified against
        Pebble's root for ``server_name``."""
        context = ssl.create_default_context(cafile=self.pebble_root)
        host, port = self.stack.https_url.removeprefix("https://").rsplit(":", 1)
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der
        return x509.load_der_x509_certificate(der)

    def edge_public_key(self) -> bytes:
        key = serialization.load_pem_private_key((self.stack.secrets_dir / "nginx/tls.key").read_bytes(), None)
        return _public_bytes(key.public_key())

    def nginx_processes(self) -> set[str]:
        """PID and command of nginx's master and workers: a reload or restart changes them."""
        return {row for row in _processes(self.stack.container_id("nginx")) if "nginx: " in row}


def _processes(container: str) -> list[str]:
    """``PID COMMAND ARGS...`` of each process in ``container``."""
    return [row.strip() for row in docker("top", container, "-o", "pid,args").stdout.splitlines()[1:]]


def _public_bytes(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


def _names(certificate: x509.Certificate) -> set[str]:
    return set(
        certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
    )


def _issued(acme: Acme) -> bool:
    """Whether the edge serves a certificate Pebble issued (not the self-signed development one)."""
    try:
        acme.served()
    except ssl.SSLCertVerificationError:
        return False
    return True


def _until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(1)


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Acme]:
    # Pebble's HTTPS certificate, which only lego in this project trusts (LEGO_CA_CERTIFICATES).
    pebble_tls = tmp_path_factory.mktemp("pebble-tls")
    certificate, key = self_signed_certificate(names=("pebble",), addresses=())
    for name, content in (("tls.crt", certificate), ("tls.key", key)):
        (pebble_tls / name).write_text(content)
        (pebble_tls / name).chmod(0o644)
    pebble_tls.chmod(0o755)
    project = os.environ.get("WHARF_IT_PROJECT", "wharf-it") + "-acme"
    secrets = tmp_path_factory.mktemp("acme-secrets")
    settings = {
        "COMPOSE_FILE": f"{ROOT}/deploy/compose/compose.yaml:{ROOT}/{OVERLAY}",
        "COMPOSE_PROFILES": "acme",
        "WHARF_TEST_PEBBLE_TLS": str(pebble_tls),
        "ACME_DOMAINS": ",".join(NAMES),
        "ACME_DIRECTORY": "https://pebble:14000/dir",
        "ACME_EMAIL": "ops@wharf.test",
        "API_REPLICAS": "1",
        "AUTH_REPLICAS": "1",
    }
    # `up` builds only the images that are missing: these two are built from the working tree now.
    new_stack(project, secrets, **settings).compose("build", "--quiet", "acme", "pebble", timeout=900)
    with composed_stack(project, secrets, **settings) as stack:
        root = stack.compose(
            "exec", "-T", "acme", "curl", "-sS", "--cacert", "/run/pebble/tls.crt", "https://pebble:15000/roots/0"
        ).stdout
        assert root.startswith("-----BEGIN CERTIFICATE-----"), root
        root_file = tmp_path_factory.mktemp("pebble-root") / "root.pem"
        root_file.write_text(root)
        yield Acme(stack, root_file)


def test_the_first_start_obtains_a_certificate_for_the_edge_key(acme: Acme) -> None:
    _until(lambda: _issued(acme), 240, f"no certificate from Pebble; the acme service logged:\n{acme.logs()[-3000:]}")
    served = acme.served()
    assert _names(served) == set(NAMES)
    acme.served(NAMES[1])  # valid for every name
    # For the edge's own key (written by dev-secrets, kept): only the certificate file changed.
    assert _public_bytes(served.public_key()) == acme.edge_public_key()
    installed = x509.load_pem_x509_certificates((acme.stack.secrets_dir / "nginx/tls.crt").read_bytes())
    assert installed[0] == served
    assert len(installed) >= 2, "the chain (Pebble's intermediate) is served with the certificate"
    # The service logs the installation after the rename that makes it served: wait for the line.
    installed_line = "installed the certificate for wharf.test,www.wharf.test"
    _until(lambda: installed_line in acme.logs(), 30, f"no '{installed_line}' in the acme service's logs")
    # Plain HTTP keeps working (HTTP-01 and the health check are plain HTTP).
    assert requests.get(acme.stack.base_url + "/healthz", timeout=10).status_code == 200


class _NamedHostAdapter(HTTPAdapter):
    """Connects to the URL's address, but sends and verifies the public host name (SNI)."""

    def __init__(self, server_name: str) -> None:
        self.server_name = server_name
        super().__init__()

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        kwargs.update(server_hostname=self.server_name, assert_hostname=self.server_name)
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]


def test_a_renewal_under_load_fails_no_request_and_reloads_nothing(acme: Acme) -> None:
    _until(lambda: _issued(acme), 240, "never issued")
    before = acme.served()
    processes = acme.nginx_processes()
    assert processes, "no nginx master or worker process found"
    url = acme.stack.https_url

    def session() -> requests.Session:
        pinned = requests.Session()
        pinned.mount("https://", _NamedHostAdapter(NAMES[0]))
        pinned.verify = str(acme.pebble_root)
        pinned.trust_env = False  # else REQUESTS_CA_BUNDLE, where set, wins over `verify`
        return pinned

    # Through the TLS listener: threads that keep one connection, made with the old certificate,
    # for the whole run, and threads that make a new connection (a handshake) for each request.
    kept_alive = Load(
        {"edge-kept-alive": lambda s: s.get(url + "/healthz", timeout=15),
         "api-kept-alive": lambda s: s.get(url + "/api/healthz", timeout=15)},
        threads=3, pace_seconds=0.05, max_seconds=240, session=session,
    )  # fmt: skip
    new_connections = Load(
        {"auth-new-connection": lambda s: s.get(url + "/auth/healthz", headers={"Connection": "close"}, timeout=15)},
        threads=2, pace_seconds=0.05, max_seconds=240, session=session,
    )  # fmt: skip

    def sent() -> int:
        return Outcomes.total(kept_alive.outcomes.snapshot()) + Outcomes.total(new_connections.outcomes.snapshot())

    with kept_alive, new_connections:
        _until(lambda: sent() >= 40, 60, "the load did not start")
        status, output = acme.exec("wharf-acme", "renew", "--force")
        assert status == 0, output
        renewed_at = sent()
        _until(lambda: sent() >= renewed_at + 60, 60, "no load after the renewal")
        counts = kept_alive.stop() + new_connections.stop()

    print(f"renewal under load: {dict(counts)}")
    assert Outcomes.matching(counts, lambda _, outcome: not is_success(outcome)) == Counter(), counts
    assert sum(Outcomes.matching(counts, lambda operation, _: operation == "auth-new-connection").values()) >= 20
    after = acme.served()
    assert after.serial_number != before.serial_number, "the renewed certificate is not served"
    assert _names(after) == set(NAMES)
    assert _public_bytes(after.public_key()) == acme.edge_public_key()
    # Served from the next handshake on, with the same nginx master and workers: no reload.
    assert acme.nginx_processes() == processes


def test_a_refusing_ca_is_named_and_the_certificate_is_kept(acme: Acme) -> None:
    _until(lambda: _issued(acme), 240, "never issued")
    before = acme.served()
    status, output = acme.exec("wharf-acme", "renew", env={"ACME_DOMAINS": f"{NAMES[0]},{REFUSED}"})
    assert status == 1, output
    (error,) = [line for line in output.splitlines() if line.startswith("wharf-acme: error:")]
    # The names asked for, the CA, and the CA's own reason (RFC 8555 error type and detail).
    assert f"no certificate for {NAMES[0]} {REFUSED} from https://pebble:14000/dir" in error
    assert "urn:ietf:params:acme:error:rejectedIdentifier" in error
    assert f"{REFUSED} is a forbidden domain" in error
    assert "nginx keeps serving wharf.test,www.wharf.test" in output
    assert acme.served().serial_number == before.serial_number


@pytest.mark.parametrize(
    ("setting", "value"),
    [("ACME_DOMAINS", "*.wharf.test"), ("ACME_DOMAINS", "203.0.113.7"), ("ACME_DOMAINS", " , "),
     ("ACME_DIRECTORY", "http://pebble/dir"),
     ("ACME_RENEW_DAYS", "0"), ("ACME_EMAIL", "ops")],
)  # fmt: skip
def test_a_malformed_setting_stops_it_with_one_line(acme: Acme, setting: str, value: str) -> None:
    status, output = acme.exec("wharf-acme", "renew", env={setting: value})
    assert status == 78, output
    (line,) = output.splitlines()
    assert line.startswith(f"configuration error: {setting}"), line


def test_the_acme_container_is_hardened_and_idle_between_passes(acme: Acme) -> None:
    container = acme.stack.container_id("acme")
    inspected = json.loads(docker("inspect", "-f", "{{json .}}", container).stdout)
    host = inspected["HostConfig"]
    assert inspected["Config"]["User"] == "101:101"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Memory"] > 0
    assert host["PidsLimit"] > 0
    assert not inspected["NetworkSettings"]["Ports"]
    # At rest: the shell and its sleep, nothing else (no health check, no interpreter).
    commands = {row.split()[1] for row in _processes(container)}
    assert commands <= {"bash", "/bin/bash", "sleep"}, commands
