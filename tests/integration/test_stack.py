"""Issue 2 acceptance: the composed stack, checked from outside through nginx."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import requests

from .conftest import Stack, docker, psql_as_api, sign_in, wait_healthy

pytestmark = pytest.mark.integration

LONG_RUNNING = {"nginx", "api", "auth", "auth-mail", "mail-sink", "postgres", "redis", "backup"}
ONE_SHOT = {"dev-secrets", "postgres-check", "db-init", "auth-migrate", "api-migrate"}


def _inspect(container_id: str) -> dict[str, object]:
    out = subprocess.run(["docker", "inspect", container_id], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


@pytest.mark.parametrize("path", ["/healthz", "/api/healthz", "/auth/healthz", "/api/readyz", "/auth/readyz"])
def test_health_through_nginx(stack: Stack, http: requests.Session, path: str) -> None:
    response = http.get(stack.base_url + path, timeout=5)
    assert response.status_code == 200, response.text


def test_unknown_route_is_problem_json(stack: Stack, http: requests.Session) -> None:
    response = http.get(stack.base_url + "/no/such/route", timeout=5)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 404


def test_every_service_is_healthy_or_completed(stack: Stack) -> None:
    containers = stack.containers()
    services = {c["Service"] for c in containers}
    assert services == LONG_RUNNING | ONE_SHOT
    for c in containers:
        if c["Service"] in LONG_RUNNING:
            assert c["State"] == "running", c
            wait_healthy(str(c["ID"]), timeout=0)  # its own check passes now, as `make up` saw
        else:
            assert (c["State"], c["ExitCode"]) == ("exited", 0), c
    replicas = [c for c in containers if c["Service"] in {"api", "auth"}]
    assert len(replicas) == 4  # two of each by default


def test_dockers_own_checks_agree(stack: Stack) -> None:
    """Docker runs a container's first check one interval after it starts (Docker 20.10): from then
    on, as configured, it finds every container healthy."""
    for c in stack.containers():
        if c["Service"] not in LONG_RUNNING:
            continue
        info = _inspect(str(c["ID"]))
        health, check = info["State"]["Health"], info["Config"]["Healthcheck"]  # type: ignore[index]
        started = datetime.fromisoformat(info["State"]["StartedAt"])  # type: ignore[index]
        first_verdict = started + timedelta(seconds=(check["Interval"] + check["Timeout"]) / 1e9)
        if datetime.now(UTC) > first_verdict:
            assert health["Status"] == "healthy", (c["Service"], health["Log"][-1:])
        else:
            assert health["Status"] in {"starting", "healthy"}, (c["Service"], health["Log"][-1:])


def test_no_health_check_starts_an_interpreter(stack: Stack) -> None:
    """Each check is an exec through Docker's daemons already; it runs bash, pg_isready or redis-cli,
    never Python (tens of milliseconds of CPU to start, every check)."""
    for c in stack.containers():
        if c["Service"] in LONG_RUNNING:
            test = _inspect(str(c["ID"]))["Config"]["Healthcheck"]["Test"]  # type: ignore[index]
            assert not any("python" in part for part in test), (c["Service"], test)


def test_the_mail_worker_is_healthy_while_its_heartbeat_file_is_fresh(stack: Stack) -> None:
    worker = stack.container_id("auth-mail")
    check = _inspect(worker)["Config"]["Healthcheck"]["Test"][1:]  # type: ignore[index]
    try:
        # In one exec: the worker touches the file after each heartbeat, and one between two execs
        # would make it fresh again.
        backdate_then_check = 'touch -d "-2 minutes" /tmp/wharf-worker-heartbeat && "$@"'
        stale = docker("exec", worker, "bash", "-c", backdate_then_check, "-", *check, check=False)
        assert stale.returncode != 0, "a stale heartbeat passed"
    finally:
        docker("exec", worker, "touch", "/tmp/wharf-worker-heartbeat")  # as its next heartbeat will
    assert docker("exec", worker, *check, check=False).returncode == 0


def test_the_mail_sink_is_healthy_while_its_smtp_server_greets(stack: Stack) -> None:
    sink = stack.container_id("mail-sink")
    check = _image_healthcheck(sink)
    assert docker("exec", sink, *check, check=False).returncode == 0
    elsewhere = [part.replace("1025", "1") for part in check]  # nothing listens there
    assert docker("exec", sink, *elsewhere, check=False).returncode != 0


def test_images_built_here_are_never_pulled(stack: Stack) -> None:
    """`make up` on a machine no registry answers prints no pull errors: compose builds these."""
    services = json.loads(stack.compose("config", "--format", "json").stdout)["services"]
    prefix = stack.env.get("WHARF_IMAGE_PREFIX", "wharf") + "/"
    built_here = {name: s for name, s in services.items() if s["image"].startswith(prefix)}
    assert {"api", "auth", "auth-mail", "nginx", "mail-sink", "db-init"} <= set(built_here)
    assert {name: s.get("pull_policy") for name, s in built_here.items()} == dict.fromkeys(built_here, "never")
    # One builder per image: compose labels an image with the service that built it, so with two
    # the tag would go to whichever finished last and `up --build` would recreate their containers.
    builders = Counter(s["image"] for s in services.values() if "build" in s)
    assert [image for image, count in builders.items() if count > 1] == []


# A stand-in for the service inside its own container: on a free port, answers one connection with
# the status line given (or, with "silent", accepts and never answers), and prints the port first.
STUB_SERVER = """
import socket, sys, time
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
connection, _ = server.accept()
connection.recv(1024)
if sys.argv[1] == "silent":
    time.sleep(10)
else:
    connection.sendall(sys.argv[1].encode() + b"\\r\\nContent-Length: 0\\r\\n\\r\\n")
"""
# Runs the image's own check ("$@") with PORT pointed at the stub; prints when it started and ended.
AGAINST_STUB = (
    'exec 4< <(python -c "$STUB" "$ANSWER"); read -r port <&4; '
    'started=$EPOCHREALTIME; PORT=$port "$@"; status=$?; echo "$started $EPOCHREALTIME"; exit $status'
)


def _image_healthcheck(container_id: str) -> list[str]:
    test: list[str] = _inspect(container_id)["Config"]["Healthcheck"]["Test"]  # type: ignore[index]
    assert test[0] == "CMD", test
    return test[1:]


@pytest.mark.parametrize("service", ["api", "auth"])
@pytest.mark.parametrize(
    ("answer", "healthy"),
    [
        ("HTTP/1.0 200 OK", True),
        ("HTTP/1.1 200 OK", True),
        ("HTTP/1.0 503 Service Unavailable", False),
        ("HTTP/1.0 404 NOT FOUND", False),
        ("silent", False),
    ],
)
def test_app_healthcheck_passes_only_on_a_200(stack: Stack, service: str, answer: str, healthy: bool) -> None:
    container = stack.container_id(service)
    check = _image_healthcheck(container)
    result = docker(
        "exec", "-e", f"STUB={STUB_SERVER}", "-e", f"ANSWER={answer}", container,
        "bash", "-c", AGAINST_STUB, "stub", *check,
        check=False, timeout=30,
    )  # fmt: skip
    assert (result.returncode == 0) == healthy, (answer, result)
    started, ended = map(float, result.stdout.split())
    assert ended - started < 3, "a silent service must fail the check within its 3 s timeout, not hang it"


@pytest.mark.parametrize("service", ["api", "auth", "nginx"])
def test_healthcheck_fails_when_nothing_listens(stack: Stack, service: str) -> None:
    container = stack.container_id(service)
    check = _image_healthcheck(container)
    port_variable = "NGINX_PORT" if service == "nginx" else "PORT"
    result = docker("exec", "-e", f"{port_variable}=1", container, *check, check=False, timeout=30)
    assert result.returncode != 0, result


def test_only_nginx_publishes_a_port(stack: Stack) -> None:
    for c in stack.containers():
        published = [p for p in c.get("Publishers") or [] if p.get("PublishedPort")]
        if c["Service"] == "nginx":
            assert sorted(p["TargetPort"] for p in published) == [8080, 8443]
        else:
            assert published == [], c["Service"]


@pytest.mark.parametrize(("service", "port"), [("postgres", 5432), ("redis", 6379)])
def test_data_stores_unreachable_from_host_and_nginx(stack: Stack, service: str, port: int) -> None:
    # Every address of the host itself. (A bridge network's container IPs stay routable from the
    # host's root namespace by Docker's design; nothing is published on the host's addresses.)
    host_addresses = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True).stdout.split()
    for address in ["127.0.0.1", *host_addresses]:
        if ":" in address:
            continue
        with pytest.raises(ConnectionRefusedError), socket.create_connection((address, port), timeout=2):
            pass
    probe = f"exec 3<>/dev/tcp/{service}/{port}"
    result = subprocess.run(
        ["docker", "exec", stack.container_id("nginx"), "timeout", "3", "bash", "-c", probe],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0, "nginx can reach " + service


def test_containers_run_as_non_root_and_hardened(stack: Stack) -> None:
    for c in stack.containers():
        info = _inspect(str(c["ID"]))
        host = info["HostConfig"]
        config_user = info["Config"]["User"]  # type: ignore[index]
        if c["Service"] == "dev-secrets":
            # The one exception: it writes into a host directory owned by whoever cloned the
            # repository, then exits. It has no network and only file-ownership capabilities.
            assert host["NetworkMode"] == "none"  # type: ignore[index]
            continue
        assert config_user, c["Service"]
        assert config_user.split(":")[0] not in {"0", "root"}, c["Service"]
        assert host["ReadonlyRootfs"] is True, c["Service"]  # type: ignore[index]
        assert host["CapDrop"] == ["ALL"] or "ALL" in host["CapDrop"], c["Service"]  # type: ignore[index,operator]
        assert not host["CapAdd"], c["Service"]  # type: ignore[index]
        assert "no-new-privileges:true" in host["SecurityOpt"], c["Service"]  # type: ignore[index,operator]
        assert host["Memory"] > 0, c["Service"]  # type: ignore[index,operator]
        assert host["PidsLimit"] > 0, c["Service"]  # type: ignore[index,operator]
        if c["State"] == "running":
            status = subprocess.run(
                ["docker", "exec", str(c["ID"]), "cat", "/proc/1/status"], capture_output=True, text=True, check=True
            ).stdout
            uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
            assert uid != "0", f"{c['Service']} PID 1 runs as root"


def test_api_role_cannot_read_auth_schema(stack: Stack) -> None:
    """Each service owns its data: api learns revocations from auth's internal endpoint, not its tables."""
    for table in ("auth.accounts", "auth.refresh_tokens", "auth.revocations"):
        denied = psql_as_api(stack, f"SELECT count(*) FROM {table}")
        assert denied.returncode != 0
        assert "permission denied" in denied.stderr
    granted = psql_as_api(
        stack,
        "SELECT has_schema_privilege('api', 'auth', 'USAGE'), count(*) FILTER (WHERE has_table_privilege("
        "'api', c.oid, 'SELECT,INSERT,UPDATE,DELETE')) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'auth'",
    )
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.split() == ["f|0"], granted.stdout
    own = psql_as_api(stack, "SELECT count(*) FROM api.users")
    assert own.returncode == 0, own.stderr


def test_malformed_setting_stops_the_service_with_one_line(stack: Stack) -> None:
    result = stack.compose("run", "--rm", "--no-deps", "-e", "DATABASE_URL=not-a-url", "api", check=False, timeout=120)
    assert result.returncode == 78
    errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert len(errors) == 1, result.stderr
    assert "DATABASE_URL" in errors[0]


def test_data_survives_down_and_up(stack: Stack, http: requests.Session) -> None:
    headers = sign_in(stack, http)
    http.headers.update(headers)
    created = http.post(stack.base_url + "/api/users", json={"name": "Kept", "email": "kept@example.com"}, timeout=10)
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert location.startswith("/api/users/")

    stack.compose("down", timeout=180)  # no -v: volumes stay
    started = time.monotonic()
    stack.up()
    print(f"warm up to healthy: {time.monotonic() - started:.1f} s")

    # The account, its token (signed before the restart) and the data are all still there.
    fetched = http.get(stack.base_url + location, timeout=10)
    assert fetched.status_code == 200
    assert fetched.json() == created.json()
    assert http.get(stack.base_url + "/auth/me", timeout=10).status_code == 200
