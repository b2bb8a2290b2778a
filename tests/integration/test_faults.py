"""Faults under a steady mixed load: dependencies stopped, replicas killed and restarted, the whole
stack taken down and up. Each test counts every outcome the load saw and adds a row to the fault
report (printed at the end of the run; ``make test-faults``).

These run on their own compose project (``$WHARF_IT_PROJECT-faults``) so the faults never reach the
stack the other integration tests share, with the edge's rate limits raised for the load (it all
comes from one address) and a long cache TTL so cached reads stay cached through a fault.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from .conftest import (
    PASSWORD,
    ROOT,
    Stack,
    composed_stack,
    container_ip,
    docker,
    images_of_its_own,
    register,
    run_make,
    sign_in,
    wait_healthy,
)
from .load import FAULT_REPORT, RAISED_EDGE_LIMITS, FaultRow, Load, Operation, Outcomes, is_success, unique_email, until

pytestmark = [pytest.mark.integration, pytest.mark.resilience, pytest.mark.own_project(minutes=8)]

TIMEOUT = 15  # seconds; a request that takes longer counts as hung (ReadTimeout)
IMAGE_PREFIX = os.environ.get("WHARF_IMAGE_PREFIX", "wharf")
PROBLEM = "503 problem"


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    project = os.environ.get("WHARF_IT_PROJECT", "wharf-it") + "-faults"
    with (
        images_of_its_own("faults") as tag,
        composed_stack(
            project,
            tmp_path_factory.mktemp("faults-secrets"),
            WHARF_TAG=tag,
            **RAISED_EDGE_LIMITS,
            NGINX_CONN_PER_IP="512",
            CACHE_TTL_SECONDS="900",
        ) as stack,
    ):
        yield stack


@pytest.fixture(autouse=True)
def _restored(faults: Stack) -> Iterator[None]:
    """Whatever a test stopped or killed is running and healthy again afterwards."""
    yield
    result = faults.compose(
        "up", "-d", "--wait", "--wait-timeout", "180", "--no-deps", "redis", "postgres", "auth", "api", "nginx",
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@dataclass
class Workload:
    """An account, users to read (never written, so they stay cached) and users to patch."""

    stack: Stack
    email: str
    headers: dict[str, str]
    readable: list[str]
    patchable: list[str]

    def __post_init__(self) -> None:
        self._turn = itertools.count()

    def _next(self, ids: list[str]) -> str:
        return ids[next(self._turn) % len(ids)]

    def warm(self) -> None:
        """Every readable user in the cache, served from it by every api process: after a Redis
        outage a process skips Redis until its breaker's pause (at most 30 s) is over."""

        def every_read_hits(session: requests.Session) -> bool:
            reads = [self.read_user(session, user_id) for user_id in self.readable * 2]
            assert all(read.status_code == 200 for read in reads)
            return all(read.headers["X-Cache"] == "HIT" for read in reads)

        with requests.Session() as session:
            assert until(lambda: every_read_hits(session), 45, 1.0), "the cache is not used"
            self.list_users(session)

    def read_user(self, session: requests.Session, user_id: str | None = None) -> requests.Response:
        user_id = user_id or self._next(self.readable)
        return session.get(f"{self.stack.base_url}/api/users/{user_id}", headers=self.headers, timeout=TIMEOUT)

    def list_users(self, session: requests.Session) -> requests.Response:
        return session.get(f"{self.stack.base_url}/api/users?limit=5", headers=self.headers, timeout=TIMEOUT)

    def create_user(self, session: requests.Session) -> requests.Response:
        headers = {**self.headers, "Idempotency-Key": uuid.uuid4().hex}
        body = {"name": "Load", "email": unique_email()}
        return session.post(f"{self.stack.base_url}/api/users", json=body, headers=headers, timeout=TIMEOUT)

    def patch_user(self, session: requests.Session) -> requests.Response:
        url = f"{self.stack.base_url}/api/users/{self._next(self.patchable)}"
        return session.patch(url, json={"name": f"Patched {uuid.uuid4().hex[:6]}"}, headers=self.headers, timeout=15)

    def me(self, session: requests.Session) -> requests.Response:
        return session.get(f"{self.stack.base_url}/auth/me", headers=self.headers, timeout=TIMEOUT)

    def keys(self, session: requests.Session) -> requests.Response:
        return session.get(f"{self.stack.base_url}/auth/.well-known/jwks.json", timeout=TIMEOUT)

    def operations(self, *names: str) -> dict[str, Operation]:
        everything: dict[str, Operation] = {
            "read": self.read_user,
            "list": self.list_users,
            "create": self.create_user,
            "patch": self.patch_user,
            "me": self.me,
            "jwks": self.keys,
        }
        return {name: everything[name] for name in names}


@pytest.fixture(scope="module")
def workload(faults: Stack) -> Workload:
    with requests.Session() as http:
        email = register(faults, http)
        headers = sign_in(faults, http, email)
        ids = []
        for _ in range(14):
            ids.append(_create(faults, http, headers)["id"])
    return Workload(faults, email, headers, readable=ids[:10], patchable=ids[10:])


# -- helpers ------------------------------------------------------------------------------------


def _create(stack: Stack, http: requests.Session, headers: dict[str, str]) -> dict[str, str]:
    made = http.post(
        f"{stack.base_url}/api/users", json={"name": "Kept", "email": unique_email()}, headers=headers, timeout=10
    )
    assert made.status_code == 201, made.text
    return made.json()


def _report(fault: str, counts: Counter[str], lost: int = 0) -> None:
    failed = Outcomes.total(Outcomes.matching(counts, lambda _op, outcome: not is_success(outcome)))
    FAULT_REPORT.append(FaultRow(fault, Outcomes.total(counts), failed, lost, counts))
    print(f"{fault}: {dict(sorted(counts.items()))}")


def _failures(counts: Counter[str], allowed: Callable[[str, str], bool] = lambda _op, _outcome: False) -> Counter[str]:
    """Outcomes that are neither a success nor ``allowed``."""
    return Outcomes.matching(counts, lambda op, outcome: not is_success(outcome) and not allowed(op, outcome))


def _window(load: Load, seconds: float) -> Counter[str]:
    """What the load saw during the next ``seconds``."""
    before = load.outcomes.snapshot()
    time.sleep(seconds)
    return load.outcomes.snapshot() - before


def _restart_state(stack: Stack, *services: str) -> dict[str, str]:
    """Start time and restart count of every container of ``services`` (to prove none restarted)."""
    state = {}
    for service in services:
        for cid in stack.container_ids(service):
            state[cid] = docker("inspect", "-f", "{{.State.StartedAt}} {{.RestartCount}}", cid).stdout.strip()
    return state


def _warnings(stack: Stack, service: str, since: float) -> list[str]:
    """The warnings ``service`` logged since ``since`` (epoch seconds), to explain a failure."""
    lines = []
    for cid in stack.container_ids(service):
        logged = docker("logs", "--since", str(int(since)), cid)
        lines += [line[:300] for line in (logged.stdout + logged.stderr).splitlines() if '"level": "warning"' in line]
    return lines


def _nginx_errors(stack: Stack) -> list[str]:
    """nginx's stderr: upstream reloads (the DNS watcher) and upstream errors, in order."""
    stderr = docker("logs", stack.container_id("nginx")).stderr
    return [line for line in stderr.splitlines() if "upstream" in line]


def _served_by_nginx(stack: Stack, address: str) -> bool:
    """Whether one of nginx's last few requests went to ``address`` and was answered."""
    recent = docker("logs", "--tail", "40", stack.container_id("nginx")).stdout.splitlines()
    return any(f'"upstream_addr":"{address}"' in line and '"upstream_status":"2' in line for line in recent)


# What the load must have seen while a dependency is down, before the test brings it back.
WITHOUT_POSTGRES = ("read 200 HIT", *(f"{operation} {PROBLEM}" for operation in ("create", "patch", "me")))
WITHOUT_REDIS = ("read 200 MISS", "create 201", "patch 200")


def _each_served(counts: Counter[str], *outcomes: str) -> bool:
    return all(counts[outcome] > 0 for outcome in outcomes)


def _all_hits(workload: Workload, session: requests.Session, reads: int) -> bool:
    return all(workload.read_user(session).headers.get("X-Cache") == "HIT" for _ in range(reads))


def _login(stack: Stack, email: str) -> int:
    return requests.post(
        f"{stack.base_url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=TIMEOUT
    ).status_code


def _postgres_serves_again(workload: Workload, seconds: float) -> bool:
    """Whether a create (api) and a /me (auth) both succeed within ``seconds``."""
    with requests.Session() as session:
        return until(
            lambda: workload.create_user(session).status_code == 201 and workload.me(session).status_code == 200,
            seconds,
            0.25,
        )


# -- the faults ---------------------------------------------------------------------------------


def test_postgres_stopped(faults: Stack, workload: Workload) -> None:
    workload.warm()
    started = time.time()
    untouched = _restart_state(faults, "api", "auth", "nginx")
    with Load(workload.operations("read", "list", "create", "patch", "me")) as load:
        time.sleep(1)
        faults.compose("stop", "postgres")
        stopped = load.outcomes.snapshot()
        felt = until(lambda: _each_served(load.outcomes.snapshot() - stopped, *WITHOUT_POSTGRES), 60, 0.5)
        during = load.outcomes.snapshot() - stopped
        faults.compose("start", "postgres")
        wait_healthy(faults.container_id("postgres"))
        recovered = _postgres_serves_again(workload, 10)
        after = _window(load, 3)
    counts = load.stop()
    _report("Postgres stopped", counts)

    # Cached reads kept answering; everything else was a well-formed 503 (with Retry-After), none hung.
    assert _failures(counts, lambda _op, outcome: outcome == PROBLEM) == Counter(), counts
    reads = Outcomes.matching(during, lambda op, _o: op == "read")
    assert reads == Counter({"read 200 HIT": during["read 200 HIT"]}), (reads, _warnings(faults, "api", started))
    assert felt, during  # cached reads answered, and each kind of call that needs Postgres got its 503
    assert recovered, "requests did not succeed within 10 s of Postgres answering again"
    assert _failures(after) == Counter(), after
    assert _restart_state(faults, "api", "auth", "nginx") == untouched


def test_postgres_hung(faults: Stack, workload: Workload) -> None:
    """``docker pause``: Postgres's kernel still accepts and acknowledges, nothing answers, and no
    statement_timeout runs. The services give up on each call (statement timeout + 2 s, 3 s to
    connect): 503 problem+json, never a hang or a bare 5xx; the pools recover on unpause."""
    workload.warm()
    postgres = faults.container_id("postgres")
    with Load(workload.operations("read", "list", "create", "patch", "me")) as load:
        time.sleep(1)
        docker("pause", postgres)
        try:
            during = _window(load, 12)
        finally:
            docker("unpause", postgres)
        recovered = _postgres_serves_again(workload, 15)
        after = _window(load, 3)
    counts = load.stop()
    _report("Postgres hung (docker pause)", counts)

    assert _failures(counts, lambda _op, outcome: outcome == PROBLEM) == Counter(), counts
    # The pause was felt: calls that needed Postgres ended as 503 problems (the load's threads
    # spend the window waiting on them, so how many of each kind is down to timing).
    assert sum(n for outcome, n in during.items() if outcome.endswith(PROBLEM)) > 0, during
    assert recovered, "requests did not succeed within 15 s of Postgres answering again"
    assert _failures(after) == Counter(), after


def test_redis_stopped(faults: Stack, workload: Workload) -> None:
    workload.warm()
    with Load(workload.operations("read", "list", "create", "patch")) as load:
        time.sleep(1)
        faults.compose("stop", "redis")
        stopped = load.outcomes.snapshot()
        # Until reads, creates and patches have each been answered without Redis (each Redis call
        # costs up to its timeout until a process's breaker opens: slow on a busy machine).
        served = until(lambda: _each_served(load.outcomes.snapshot() - stopped, *WITHOUT_REDIS), 60, 0.5)
        during = load.outcomes.snapshot() - stopped
        logins = [_login(faults, workload.email) for _ in range(3)]
        faults.compose("start", "redis")
        wait_healthy(faults.container_id("redis"))
        with requests.Session() as session:
            # The cache is used again by every api process (each after its breaker's pause, at most
            # 30 s): a run of reads, spread over the processes, all hit.
            cached_again = until(lambda: _all_hits(workload, session, 12), 60, 0.5)
    counts = load.stop()
    _report("Redis stopped", counts)

    assert logins == [200, 200, 200]
    assert _failures(counts) == Counter(), counts
    assert served, during
    assert Outcomes.matching(during, lambda op, _o: op == "read") == Counter({"read 200 MISS": during["read 200 MISS"]})
    assert cached_again


def test_api_replica_killed(faults: Stack, workload: Workload) -> None:
    workload.warm()
    victim = faults.container_ids("api")[0]
    with Load(workload.operations("read", "list", "create")) as load:
        time.sleep(2)
        docker("kill", "--signal", "KILL", victim)
        time.sleep(8)
    counts = load.stop()
    _report("api replica SIGKILLed", counts)

    # nginx sends a GET the dead replica did not answer to the other one; a POST caught in it may
    # fail (502). So may a response the killed worker had begun: gunicorn writes the headers and the
    # body in two calls, and nginx cannot retry what it has started to pass on (the client sees the
    # body cut short). Anything else (a 502 for a GET, a timeout) fails the test.
    def in_the_dead_worker(op: str, outcome: str) -> bool:
        return (op == "create" and outcome == "502 problem") or outcome == "ChunkedEncodingError"

    assert _failures(counts, in_the_dead_worker) == Counter(), counts


def test_rolling_restart_of_every_api_and_auth_replica(faults: Stack, workload: Workload) -> None:
    workload.warm()
    logged_before = len(_nginx_errors(faults))
    addresses: list[tuple[str, str, str]] = []
    with Load(workload.operations("read", "list", "create", "patch", "me", "jwks")) as load:
        time.sleep(1)
        for service in ("api", "auth"):
            for cid in faults.container_ids(service):
                network = f"{faults.project}_backend"
                before = container_ip(cid, network)
                docker("restart", "--time", "30", cid, timeout=90)  # SIGTERM, drain, start again
                wait_healthy(cid)
                after = container_ip(cid, network)
                addresses.append((service, before, after))
                # As an operator would: the next replica goes only once nginx sends this one
                # traffic again (it skips a replica that refused for 5 s, its fail_timeout).
                assert until(functools.partial(_served_by_nginx, faults, f"{after}:8000"), 60, 0.5), after
        time.sleep(2)
    counts = load.stop()
    nginx_said = _nginx_errors(faults)[logged_before:]
    _report("rolling SIGTERM restart of every api and auth replica", counts)
    print(f"replica addresses (service, before, after): {addresses}")
    print("nginx during the restart:", *nginx_said, sep="\n  ")

    assert _failures(counts) == Counter(), (counts, addresses, nginx_said)


def test_auth_restarted_old_tokens_still_verify(faults: Stack, workload: Workload) -> None:
    workload.warm()
    with Load(workload.operations("read", "list")) as load:
        time.sleep(1)
        faults.compose("restart", "auth", timeout=180)
        for cid in faults.container_ids("auth"):
            wait_healthy(cid)
        time.sleep(1)
    counts = load.stop()
    with requests.Session() as session:
        after = [workload.list_users(session).status_code, workload.me(session).status_code]
    _report("auth restarted (tokens issued before)", counts)

    assert _failures(counts) == Counter(), counts
    assert after == [200, 200]


def test_postgres_restarted_during_idempotent_creates(faults: Stack, workload: Workload) -> None:
    """Creates that retry with their Idempotency-Key until acknowledged: each exists exactly once."""
    acknowledged: dict[str, str] = {}  # email -> id
    attempts: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    prefix = f"pgrestart-{uuid.uuid4().hex[:8]}-"

    def create_until_acknowledged(session: requests.Session, email: str) -> None:
        headers = {**workload.headers, "Idempotency-Key": uuid.uuid4().hex}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                response = session.post(
                    f"{faults.base_url}/api/users", json={"name": "Once", "email": email}, headers=headers, timeout=15
                )
                outcome = str(response.status_code)
            except requests.RequestException as exc:
                response, outcome = None, type(exc).__name__
            with lock:
                attempts[f"create {outcome}"] += 1
            if response is not None and response.status_code == 201:
                with lock:
                    acknowledged[email] = response.json()["id"]
                return
            time.sleep(0.2)

    def creator(worker: int) -> None:
        with requests.Session() as session:
            for n in itertools.count():
                if stop.is_set() or n >= 400:
                    return
                create_until_acknowledged(session, f"{prefix}{worker}-{n}@example.com")
                time.sleep(0.02)

    threads = [threading.Thread(target=creator, args=(w,), daemon=True) for w in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    faults.compose("restart", "postgres", timeout=120)
    wait_healthy(faults.container_id("postgres"))
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)

    rows = _psql(faults, f"SELECT email, id FROM api.users WHERE email LIKE '{prefix}%'")
    stored = Counter(email for email, _ in rows)
    ids = dict(rows)
    lost = [email for email, user_id in acknowledged.items() if ids.get(email) != user_id]
    duplicated = [email for email, count in stored.items() if count > 1]
    unacknowledged = sorted(set(stored) - set(acknowledged))
    _report("Postgres restarted during idempotent creates (retried)", attempts, lost=len(lost) + len(duplicated))

    assert acknowledged
    assert not any(thread.is_alive() for thread in threads)
    assert lost == [], lost
    assert duplicated == [], duplicated
    assert unacknowledged == [], unacknowledged  # every create was retried until acknowledged


def _psql(stack: Stack, query: str) -> list[tuple[str, str]]:
    out = stack.compose(
        "exec", "-T", "postgres", "psql", "-U", "postgres", "-d", "wharf", "-tA", "-F", "\t", "-c", query
    ).stdout
    return [tuple(line.split("\t", 1)) for line in out.splitlines() if line.strip()]  # type: ignore[misc]


def _next_release(tmp_path: Path) -> Path:
    """A checkout of the next release: this one plus an expand migration in api (a nullable column
    the running release does not know) and a changed line in each service, so both images change."""
    copy = tmp_path / "next-release"
    ignored = shutil.ignore_patterns(".git", ".venv", ".wharf", "__pycache__", ".pytest_cache", "test-artifacts")
    shutil.copytree(ROOT, copy, ignore=ignored, symlinks=True)
    versions = copy / "services/api/src/wharf_api/migrations/versions"
    revisions = {}  # revision -> the one it revises
    for script in versions.glob("*.py"):
        found = dict(re.findall(r'^(revision|down_revision) = "([^"]+)"$', script.read_text(), re.MULTILINE))
        revisions[found["revision"]] = found.get("down_revision")
    (head,) = set(revisions) - set(revisions.values())
    (versions / "9000_deploy_probe.py").write_text(
        '"""The next release\'s expand step: a nullable column the running release ignores."""\n\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f'revision = "9000_deploy_probe"\ndown_revision = "{head}"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade() -> None:\n"
        '    op.add_column("users", sa.Column("deploy_probe", sa.Text(), nullable=True), schema="api")\n\n\n'
        "def downgrade() -> None:\n"
        '    op.drop_column("users", "deploy_probe", schema="api")\n'
    )
    for service in ("api", "auth"):
        with (copy / f"services/{service}/src/wharf_{service}/__init__.py").open("a") as module:
            module.write("# the next release\n")
    return copy


def _images(stack: Stack, *services: str) -> set[str]:
    return {
        docker("inspect", "-f", "{{.Image}}", cid).stdout.strip() for s in services for cid in stack.container_ids(s)
    }


# Two image builds and two rolling replacements of four replicas: minutes on a busy machine, more
# than the suite's 300 s per test (which is there to catch a hang).
@pytest.mark.timeout(900)
def test_deploy_of_a_changed_image_and_rollback_under_load(faults: Stack, workload: Workload, tmp_path: Path) -> None:
    """`make deploy` of the next release (new api and auth images, an expand migration), then
    `make rollback`: every request answered, every acknowledged create kept. During both, the
    previous release's code serves on the new schema."""
    workload.warm()
    before = _images(faults, "api", "auth")
    replicas = {s: len(faults.container_ids(s)) for s in ("api", "auth")}
    acknowledged: list[str] = []

    def create(session: requests.Session) -> requests.Response:
        response = workload.create_user(session)
        if response.status_code == 201:
            acknowledged.append(response.json()["id"])
        return response

    operations = {**workload.operations("read", "list", "patch", "me", "jwks"), "create": create}
    steps = [("deploy of a changed image (api and auth; expand migration)", _next_release(tmp_path), "deploy")]
    steps.append(("rollback to the previous images (schema kept)", ROOT, "rollback"))
    tag = faults.env["WHARF_TAG"]
    tags = {image: _image_id(image) for image in (f"{IMAGE_PREFIX}/{s}:{tag}" for s in ("api", "auth"))}
    try:
        _deploy_and_roll_back(faults, steps, operations, acknowledged, before, replicas)
    finally:  # the images the rest of the session runs, whatever happened; no release left behind
        for image, image_id in tags.items():
            docker("tag", image_id, image)
            docker("image", "rm", f"{image}-previous", check=False)


def _image_id(image: str) -> str:
    return docker("image", "inspect", "-f", "{{.Id}}", image).stdout.strip()


def _deploy_and_roll_back(
    faults: Stack,
    steps: list[tuple[str, Path, str]],
    operations: dict[str, Operation],
    acknowledged: list[str],
    before: set[str],
    replicas: dict[str, int],
) -> None:
    for fault, checkout, target in steps:
        with Load(operations, threads=3, pace_seconds=0.05, max_requests=50_000, max_seconds=600) as load:
            time.sleep(1)
            result = run_make(faults, "-C", str(checkout), target, check=False)
            time.sleep(2)
        counts = load.stop()
        written = {row[0] for row in _psql(faults, "SELECT id::text, '' FROM api.users")}
        lost = [user_id for user_id in acknowledged if user_id not in written]
        _report(f"make {fault}", counts, lost=len(lost))
        print(result.stdout, result.stderr, sep="\n")

        assert result.returncode == 0, result.stdout + result.stderr
        assert _failures(counts) == Counter(), counts
        assert counts["create 201"] > 0, counts
        assert counts["read 200 HIT"] > 0, counts
        assert lost == [], lost
        assert {s: len(faults.container_ids(s)) for s in ("api", "auth")} == replicas
        after = _images(faults, "api", "auth")
        if target == "deploy":
            assert not after & before, "a replica still runs a previous image"
            assert len(after) == 2  # one new image each for api and auth
            columns = _psql(faults, "SELECT column_name, '' FROM information_schema.columns WHERE table_name = 'users'")
            assert ("deploy_probe", "") in columns
        else:
            assert after == before, "rollback did not return to the previous images"


def test_compose_down_then_up_keeps_data_accounts_and_tokens(faults: Stack, workload: Workload) -> None:
    with requests.Session() as http:
        accounts = {}
        for _ in range(3):
            email = register(faults, http)
            accounts[email] = sign_in(faults, http, email)
        users = {}
        for headers in accounts.values():
            made = _create(faults, http, headers)
            users[made["id"]] = made

        faults.compose("down", timeout=180)  # no -v: the volumes stay
        faults.up()

        outcomes: Counter[str] = Counter()
        lost = 0
        for user_id, document in users.items():
            fetched = http.get(f"{faults.base_url}/api/users/{user_id}", headers=workload.headers, timeout=10)
            outcomes[f"read {fetched.status_code}"] += 1
            lost += fetched.status_code != 200 or fetched.json() != document
        for email, old_headers in accounts.items():
            for name, url in (("old-token-me", "/auth/me"), ("old-token-list", "/api/users?limit=1")):
                status = http.get(faults.base_url + url, headers=old_headers, timeout=10).status_code
                outcomes[f"{name} {status}"] += 1
            status = _login(faults, email)
            outcomes[f"login {status}"] += 1
            lost += status != 200
    _report("compose down, then up (no -v)", outcomes, lost=lost)

    assert lost == 0
    assert _failures(outcomes) == Counter(), outcomes
