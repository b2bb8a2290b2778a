"""The composed stack, up in real containers, reached only through nginx.

It runs as its own compose project (``wharf-it``, or ``$WHARF_IT_PROJECT``) on its own ports with
its own secrets directory, so it never touches a developer's stack, and is removed with its
volumes at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = [str(ROOT / "scripts" / "compose.sh")]


@dataclass(frozen=True)
class Stack:
    project: str
    base_url: str
    https_url: str
    prometheus_url: str  # profile `observability`, when a test starts it
    secrets_dir: Path
    env: dict[str, str]

    def compose(
        self, *args: str, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``scripts/compose.sh -p PROJECT ARGS``, with ``env`` added to the stack's environment."""
        return subprocess.run(
            [*COMPOSE, "-p", self.project, *args],
            env={**self.env, **(env or {})},
            cwd=ROOT,
            capture_output=True,
            text=True,
            errors="replace",  # logs may carry any bytes (pgBackRest prints what it failed to decrypt)
            check=check,
            timeout=timeout,
        )

    def up(self) -> None:
        result = self.compose("up", "-d", "--wait", "--wait-timeout", "240", check=False)
        if result.returncode != 0:
            logs = self.compose("logs", "--no-color", "--tail", "40", check=False).stdout
            pytest.fail(f"stack did not come up:\n{result.stderr}\n{logs}")

    def containers(self) -> list[dict[str, object]]:
        """The services' containers, stopped ones too; not one-off `compose run` containers (a
        test's extra edge)."""
        out = self.compose("ps", "--all", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [row for row in rows if "com.docker.compose.oneoff=True" not in str(row.get("Labels", ""))]

    def container_id(self, service: str) -> str:
        return self.container_ids(service)[0]

    def container_ids(self, service: str) -> list[str]:
        """The running containers of ``service``, in replica order."""
        rows = self.compose("ps", "--format", "{{.Name}} {{.ID}}", service).stdout.split("\n")
        return [row.split()[1] for row in sorted(rows) if row.strip()]

    def secret(self, relative: str) -> str:
        return (self.secrets_dir / relative).read_text().strip()

    def get_inside(self, container_id: str, url: str) -> tuple[int, str]:
        """GET ``url`` from inside a container (its networks, not the host's): status and body."""
        script = (
            "import sys, urllib.error, urllib.request\n"
            "try:\n"
            "    r = urllib.request.urlopen(sys.argv[1], timeout=5)\n"
            "except urllib.error.HTTPError as e:\n"
            "    r = e\n"
            "print(r.status)\n"
            "print(r.read().decode(), end='')\n"
        )
        out = subprocess.run(
            ["docker", "exec", container_id, "python", "-c", script, url],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        status, _, body = out.partition("\n")
        return int(status), body


# What a response must be to agree with its OpenAPI document (schemathesis' checks): no 5xx, a
# declared status and media type, the declared headers with their types, a body the schema accepts;
# and, for a generated request, accepted when the document allows it and refused when it does not
# (with the statuses tests/integration/contract.py declares; a hand-made request has no mode).
CONFORMANCE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    negative_data_rejection,
]


def docker(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, errors="replace", timeout=timeout)
    if check and result.returncode != 0:  # with what Docker said, which CalledProcessError would not show
        pytest.fail(f"docker {' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def psql_as(stack: Stack, role: str, query: str) -> subprocess.CompletedProcess[str]:
    """Run ``query`` in the Postgres container, logged in as a service's own role (api, auth)."""
    password = stack.secret(f"{role}/db_password")
    return docker(
        "exec", "-e", f"PGPASSWORD={password}", stack.container_id("postgres"),
        "psql", "-h", "127.0.0.1", "-U", role, "-d", "wharf", "-tAc", query,
        check=False,
    )  # fmt: skip


def psql_as_api(stack: Stack, query: str) -> subprocess.CompletedProcess[str]:
    return psql_as(stack, "api", query)


def wait_healthy(container: str, timeout: float = 90) -> None:
    """Until the container runs and its own health check passes, run now (scripts/ready.sh, as
    `make up` waits): Docker runs its first check only one interval (30-60 s) after a start."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "ready.sh"), "--timeout", str(int(timeout)), container],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout + 60,
    )
    if result.returncode != 0:
        pytest.fail(f"{container} did not become healthy in {timeout} s: {result.stderr.strip()}")


@contextlib.contextmanager
def images_of_its_own(suffix: str) -> Iterator[str]:
    """The images built here, also tagged ``$WHARF_TAG-suffix`` (no build: the same images), for a
    compose project of a test's own that builds (`make up --build`, `make deploy`): its builds then
    move that tag only, never one other tests start containers from meanwhile (in other processes;
    a build under another project labels an image anew, so `up` would recreate their services).
    Yields the tag; removed afterwards, with what `make deploy` kept as `-previous`."""
    prefix, tag = os.environ.get("WHARF_IMAGE_PREFIX", "wharf"), os.environ.get("WHARF_TAG", "dev")
    listed = docker("image", "ls", "--format", "{{.Repository}}", "--filter", f"reference={prefix}/*:{tag}")
    own_tag = f"{tag}-{suffix}"
    for repository in listed.stdout.split():
        docker("tag", f"{repository}:{tag}", f"{repository}:{own_tag}")
    try:
        yield own_tag
    finally:
        for repository in listed.stdout.split():
            docker("image", "rm", f"{repository}:{own_tag}", f"{repository}:{own_tag}-previous", check=False)


def container_ip(container: str, network: str | None = None) -> str:
    if network:
        template = f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}'
    else:
        template = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    return docker("inspect", "-f", template, container).stdout.split()[0]


def edge_defaults() -> dict[str, str]:
    """The edge's default settings, as the image applies them (deploy/nginx/defaults.env)."""
    lines = (ROOT / "deploy" / "nginx" / "defaults.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def wait_for_whole_sign_in_allowance() -> None:
    """Sleep until the edge's strict per-address allowance on sign-in routes (shared by every test
    from this address) is whole again, however much of it was spent: the bucket drains at its rate."""
    defaults = edge_defaults()
    time.sleep(int(defaults["NGINX_AUTH_BURST"]) / int(defaults["NGINX_AUTH_RATE"].removesuffix("r/s")))


# The ports of the stacks a process starts come from a block of its own (pytest-xdist's gwN: block
# N), below the ephemeral range (32768-60999) from which the kernel's bind(0) and Docker's own
# allocation (`-p 127.0.0.1::PORT`, the labs and clusters) draw: nginx binds its ports only when
# `compose up` reaches it, tens of seconds after the pick, and a port drawn from that range may
# have gone to another process's container by then ("port is already allocated").
PORT_BLOCK_START, PORT_BLOCK_SIZE = 20_000, 500
_port_picks = itertools.count()


def _free_port() -> int:
    import socket

    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    start = PORT_BLOCK_START + worker * PORT_BLOCK_SIZE
    for _ in range(PORT_BLOCK_SIZE):
        port = start + next(_port_picks) % PORT_BLOCK_SIZE  # never one this process handed out just before
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {start}-{start + PORT_BLOCK_SIZE - 1}")


def new_stack(
    project: str, secrets_dir: Path, *, port: int | None = None, https_port: int | None = None, **settings: str
) -> Stack:
    """A compose project of its own: its own ports on loopback and its own (empty) secrets
    directory, with ``settings`` added to the environment. Nothing is started yet."""
    for name in ("postgres", "auth", "auth-mail", "api", "redis", "nginx", "alertmanager", "backup"):
        (secrets_dir / name).mkdir(exist_ok=True)
    port = port or _free_port()
    https_port = https_port or _free_port()
    prometheus_port = _free_port()
    env = {
        **os.environ,
        "WHARF_SECRETS_DIR": str(secrets_dir),
        "WHARF_HTTP_PORT": str(port),
        "WHARF_BIND": "127.0.0.1",
        "WHARF_HTTPS_PORT": str(https_port),
        "WHARF_TLS": "on",
        "WHARF_PROMETHEUS_PORT": str(prometheus_port),
        **settings,
    }
    return Stack(
        project=project,
        base_url=f"http://127.0.0.1:{port}",
        https_url=f"https://127.0.0.1:{https_port}",
        prometheus_url=f"http://127.0.0.1:{prometheus_port}",
        secrets_dir=secrets_dir,
        env=env,
    )


@contextlib.contextmanager
def composed_stack(
    project: str, secrets_dir: Path, *, port: int | None = None, https_port: int | None = None, **settings: str
) -> Iterator[Stack]:
    """A fresh stack as compose project ``project`` (extra compose ``settings`` such as ``NGINX_RATE``),
    up and healthy; removed with its volumes afterwards."""
    stack = new_stack(project, secrets_dir, port=port, https_port=https_port, **settings)
    stack.compose("down", "-v", "--remove-orphans", check=False)
    try:
        stack.up()
        yield stack
        leaks = secrets_in_logs(stack)
    finally:
        stack.compose("down", "-v", "--remove-orphans", check=False, timeout=180)
    assert not leaks, f"secrets in the logs of {project}: {leaks}"


# Refresh tokens handed out by sign_in(); access tokens are found by their shape (JWT_IN_TEXT).
ISSUED_SECRETS: set[str] = set()
JWT_IN_TEXT = re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{20,}")


def secrets_in_logs(stack: Stack) -> list[str]:
    """Where a secret shows up in any log line the stack wrote: a line of any secret file (passwords,
    private keys, Redis ACL), the tests' password, a refresh token or any signed JWT, or a Bearer
    credential. Returns descriptions, never the secret itself."""
    logs = stack.compose("logs", "--no-color", "--no-log-prefix", check=False, timeout=120).stdout
    needles: dict[str, str] = {PASSWORD: "the test accounts' password"}
    for path in stack.secrets_dir.rglob("*"):
        if path.is_file() and path.suffix != ".crt":  # the certificate is public
            for line in path.read_text().splitlines():
                if len(line.strip()) >= 16 and not line.startswith("-----"):
                    needles[line.strip()] = f"a line of {path.relative_to(stack.secrets_dir)}"
    needles.update(dict.fromkeys(ISSUED_SECRETS, "a refresh token"))
    leaks = sorted({where for needle, where in needles.items() if needle in logs})
    if JWT_IN_TEXT.search(logs):
        leaks.append("a signed JWT")
    if "Bearer ey" in logs:
        leaks.append("a Bearer credential")
    return leaks


# The shared stacks this process has up, by the group of their tests (tests/conftest.py): each is
# taken down after its group's last test here (pytest_runtest_teardown below), not at the end of
# the session, so a process that goes on with a module of its own never holds two compose
# projects (each takes five of the Docker engine's ~30 network address pools, shared by all).
SHARED_STACKS: dict[str, tuple[Stack, contextlib.ExitStack]] = {}


@contextlib.contextmanager
def _shared(group: str, project: str, secrets_dir: Path, **ports: int | None) -> Iterator[Stack]:
    with contextlib.ExitStack() as held:
        stack = held.enter_context(composed_stack(project, secrets_dir, **ports))
        SHARED_STACKS[group] = (stack, held)
        try:
            yield stack
        finally:
            SHARED_STACKS.pop(group, None)


def on_shared_stack_down(stack: Stack, cleanup: Callable[[], object]) -> None:
    """Runs ``cleanup`` before ``stack`` (a shared one) is taken down, e.g. to remove a container
    attached to its networks."""
    for shared, held in SHARED_STACKS.values():
        if shared.project == stack.project:
            held.callback(cleanup)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    result = yield
    group = _xdist_group(item)
    if group in SHARED_STACKS and (nextitem is None or _xdist_group(nextitem) != group):
        SHARED_STACKS.pop(group)[1].close()  # its group's tests run one after another (tests/conftest.py)
    return result


def _xdist_group(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("xdist_group")
    return str(marker.args[0]) if marker else None


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with _shared(
        "stack",
        os.environ.get("WHARF_IT_PROJECT", "wharf-it"),
        tmp_path_factory.mktemp("stack-secrets"),
        port=int(os.environ.get("WHARF_IT_PORT") or 0) or None,
        https_port=int(os.environ.get("WHARF_IT_HTTPS_PORT") or 0) or None,
    ) as stack:
        yield stack


@pytest.fixture(scope="session")
def scratch_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second stack like the session's, for the modules whose tests stop, kill or take down what
    they test (they override ``stack`` with this one): they run beside the tests on the shared
    stack (tests/conftest.py) instead of pulling it from under them."""
    project = os.environ.get("WHARF_IT_PROJECT", "wharf-it") + "-scratch"
    with _shared("scratch", project, tmp_path_factory.mktemp("scratch-secrets")) as stack:
        yield stack


class UnthrottledEdge:
    """A second edge in front of the stack's services: the stack's own nginx service (image and
    settings), but believing the X-Forwarded-For of requests from this host. Each request can so
    come from an address of its own, and no per-address limit (the edge's rates, auth's sign-in
    and mail limits) hides an operation's logic from a test that sends many requests, as the
    raised limits of `make bench` do for the benchmark."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._hosts = itertools.count(1)

    def new_client(self) -> dict[str, str]:
        """Headers that make a request come from an address no request came from before."""
        return {"X-Forwarded-For": f"2001:db8::{next(self._hosts):x}"}  # RFC 3849 documentation prefix

    def register(self, prefix: str = "it", name: str = "It") -> str:
        """A new account with a unique email, registered from an address of its own; returns the email."""
        with self._from_a_new_client() as http:
            return register(self, http, prefix, name)

    def sign_in(self, email: str) -> dict[str, str]:
        """Authorization headers of a new session of ``email``'s account, from an address of its own."""
        with self._from_a_new_client() as http:
            return sign_in(self, http, email)

    def _from_a_new_client(self) -> requests.Session:
        http = requests.Session()
        http.headers.update(self.new_client())
        return http


@pytest.fixture(scope="session")
def unthrottled(stack: Stack) -> Iterator[UnthrottledEdge]:
    name = f"{stack.project}-unthrottled-edge"
    docker("rm", "-f", name, check=False)
    public = docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", f"{stack.project}_public")
    # Only the host (the public network's gateway) and the edges are on that network.
    trusted = f"NGINX_REAL_IP_FROM={public.stdout.strip()}"
    stack.compose("run", "-d", "--no-deps", "--name", name, "-p", "127.0.0.1::8080", "-e", trusted, "nginx")
    try:
        wait_healthy(name)
        port = docker("port", name, "8080/tcp").stdout.splitlines()[0].rsplit(":", 1)[1]
        edge = UnthrottledEdge(f"http://127.0.0.1:{port}")
        client = edge.new_client()
        assert requests.get(f"{edge.base_url}/healthz", headers=client, timeout=10).status_code == 200
        deadline = time.monotonic() + 10  # the access log is flushed every second
        while f'"client_ip":"{client["X-Forwarded-For"]}"' not in docker("logs", name).stdout:
            assert time.monotonic() < deadline, "the edge does not believe X-Forwarded-For from this host"
            time.sleep(0.2)
        on_shared_stack_down(stack, lambda: docker("rm", "-f", name, check=False))
        yield edge
    finally:
        docker("rm", "-f", name, check=False)


@pytest.fixture
def http(stack: Stack) -> Iterator[requests.Session]:
    session = requests.Session()
    session.headers["User-Agent"] = "wharf-integration-tests"
    yield session
    session.close()


PASSWORD = "correct horse battery staple"


def register(stack: Stack | UnthrottledEdge, http: requests.Session, prefix: str = "it", name: str = "It") -> str:
    """A new account with a unique email (``prefix-...@example.com``), through ``stack``'s edge (or
    the unthrottled one); returns the email."""
    email = f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"
    created = http.post(
        f"{stack.base_url}/auth/register", json={"email": email, "password": PASSWORD, "name": name}, timeout=10
    )
    assert created.status_code == 201, created.text
    return email


def sign_in(stack: Stack | UnthrottledEdge, http: requests.Session, email: str | None = None) -> dict[str, str]:
    """Authorization headers of a fresh session (registering a new account unless ``email`` is given)."""
    email = email or register(stack, http)
    tokens = http.post(f"{stack.base_url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10)
    assert tokens.status_code == 200, tokens.text
    ISSUED_SECRETS.add(tokens.json()["refresh_token"])
    return {"Authorization": f"Bearer {tokens.json()['access_token']}"}


def run_make(
    stack: Stack, *args: str, backup_dir: Path | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``make ARGS`` on this stack's compose project, without a terminal (as from a script or CI)."""
    env = {**stack.env, "COMPOSE_PROJECT_NAME": stack.project}
    if backup_dir is not None:
        env["BACKUP_DIR"] = str(backup_dir)
    result = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist process: its fault rows go to the main process, which prints the table."""
    from .load import FAULT_REPORT

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fault_report"] = [asdict(row) | {"outcomes": dict(row.outcomes)} for row in FAULT_REPORT]


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's, in the main process
def pytest_testnodedown(node: Any, error: object) -> None:
    from .load import FAULT_REPORT, FaultRow

    for row in getattr(node, "workeroutput", {}).get("fault_report", []):
        FAULT_REPORT.append(FaultRow(**row | {"outcomes": Counter(row["outcomes"])}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault table (tests/integration/test_faults.py), when fault tests ran; tests/README.md keeps the latest."""
    from .load import FAULT_REPORT, format_report

    if FAULT_REPORT:
        terminalreporter.write_sep("=", "faults under load (latest kept in tests/README.md)")
        terminalreporter.write_line(format_report(FAULT_REPORT))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A failed test on the session stack shows the edge's error log of the last minutes (an
    upstream that did not answer, a name that did not resolve): what a 5xx came from."""
    report = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.failed and call.when == "call" and isinstance(stack, Stack):
        for cid in stack.container_ids("nginx"):
            lines = docker("logs", "--since", "5m", cid, check=False).stderr.splitlines()
            errors = [line for line in lines if "limiting requests" not in line]  # the tests' own bursts
            report.sections.append((f"nginx {cid[:12]} error log, last 5 min", "\n".join(errors[-40:])))
    return report
