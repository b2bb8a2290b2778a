"""Backups on pgBackRest (deploy/backup/): the off-host SFTP repository, bad restore input refused
with nothing touched, point-in-time restore under load (a backup taken under it), a damaged backup
caught by verification, and a lost disk (data and repository 1) just after a postgres restart,
restored from the off-host repository with a measured recovery point and time.

They share one compose project of their own (``$WHARF_IT_PROJECT-backups``), with an OpenSSH
server as the second repository (tests/integration/sftp/) and ``archive_timeout`` at 10 s, and
run in file order: each leaves the stack healthy for the next; the lost disk, which takes the
damaged repository 1 with it, comes last.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Stack, composed_stack, docker, register, run_make, sign_in, wait_healthy
from .load import RAISED_EDGE_LIMITS, Load, unique_email, until

# Each test restarts most of the stack (a restore stops and starts everything, twice over on this
# shared 2-core machine), so each has more than the suite's default 300 s.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.resilience,
    pytest.mark.timeout(900),
    pytest.mark.own_project(minutes=7.5),
]

ARCHIVE_TIMEOUT = 10  # seconds (POSTGRES_ARCHIVE_TIMEOUT of this project)
# A segment switched by archive_timeout is archived once pgBackRest has pushed it to both
# repositories (compressed, encrypted, one of them over SFTP): the time that takes on this machine.
PUSH_ALLOWANCE = 10
RESTORE_TIMEOUT = 900  # make restore, on a busy 2-core machine


def _openssh_private(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


def _openssh_public(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.fixture(scope="module")
def backups(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    secrets_dir = tmp_path_factory.mktemp("backups-secrets")
    sftp_config = tmp_path_factory.mktemp("sftp-config")
    host_key, client_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    (sftp_config / "ssh_host_ed25519_key").write_text(_openssh_private(host_key))
    (sftp_config / "ssh_host_ed25519_key").chmod(0o600)
    (sftp_config / "authorized_keys").write_text(_openssh_public(client_key) + "\n")
    sftp_config.chmod(0o755)
    (secrets_dir / "backup").mkdir()
    (secrets_dir / "backup" / "sftp_key").write_text(_openssh_private(client_key))
    host_blob = base64.b64decode(_openssh_public(host_key).split()[1])
    project = os.environ.get("WHARF_IT_PROJECT", "wharf-it") + "-backups"
    with composed_stack(
        project,
        secrets_dir,
        COMPOSE_FILE="deploy/compose/compose.yaml:tests/integration/sftp/compose.yaml",
        SFTP_TEST_CONFIG=str(sftp_config),
        BACKUP_SFTP_HOST="sftp",
        BACKUP_SFTP_USER="wharf",
        BACKUP_SFTP_PATH="/home/wharf/repository",
        BACKUP_SFTP_HOST_FINGERPRINT=hashlib.sha256(host_blob).hexdigest(),
        POSTGRES_ARCHIVE_TIMEOUT=str(ARCHIVE_TIMEOUT),
        # Nothing scheduled during the tests: each takes the backups it needs.
        BACKUP_FULL_SCHEDULE="off",
        BACKUP_DIFF_SCHEDULE="off",
        BACKUP_VERIFY_SCHEDULE="off",
        **RAISED_EDGE_LIMITS,
    ) as stack:
        _wait_for_first_backup(stack)
        yield stack


# -- helpers ------------------------------------------------------------------------------------


def _superuser_sql(stack: Stack, query: str) -> str:
    result = docker(
        "exec", stack.container_id("postgres"), "psql", "-X", "-U", "postgres", "-d", "wharf", "-tAc", query
    )  # fmt: skip
    return result.stdout.strip()


def _info(stack: Stack) -> list[dict[str, object]]:
    """pgBackRest's own view of both repositories."""
    out = docker("exec", stack.container_id("backup"), "wharf-backup", "pgbackrest", "info", "--output=json")
    return json.loads(out.stdout)


def _labels(stack: Stack) -> list[tuple[str, int]]:
    return [(b["label"], b["database"]["repo-key"]) for b in _info(stack)[0]["backup"]]


def _wait_for_first_backup(stack: Stack) -> None:
    """The backup service takes a full backup into each repository at start when it has none."""
    assert until(lambda: {repo for _, repo in _labels(stack)} == {1, 2}, 300, 2), "no first backups within 300 s"


def _archived_after(stack: Stack, moment: datetime) -> Callable[[], bool]:
    """Whether postgres has archived a WAL segment after ``moment`` (so everything committed
    before the segment switch that preceded it is in both repositories)."""

    def check() -> bool:
        last = _superuser_sql(stack, "SELECT extract(epoch FROM last_archived_time) FROM pg_stat_archiver")
        return bool(last) and float(last) > moment.timestamp()

    return check


def _checkpointer_wakes(stack: Stack) -> int:
    """How often the backup service has woken postgres's checkpointer after a start (its log)."""
    return stack.compose("logs", "--no-color", "backup").stdout.count("its checkpointer woken")


def _metrics(stack: Stack) -> str:
    """The backup service's metrics page as a scraper gets it: HTTP from inside its container
    (busybox wget, which fails on any status but 2xx)."""
    url = "http://127.0.0.1:9000/cgi-bin/metrics"
    return docker("exec", stack.container_id("backup"), "busybox", "wget", "-q", "-O", "-", url).stdout


def _values(page: str, name: str) -> list[float]:
    """The samples of metric ``name``, the page parsed as Prometheus would (a malformed page fails)."""
    return [s.value for family in text_string_to_metric_families(page) for s in family.samples if s.name == name]


def _sample(page: str, name: str) -> float:
    values = _values(page, name)
    assert len(values) == 1, f"{name}: {values} in the metrics:\n{page}"
    return values[0]


def _make(stack: Stack, *args: str, check: bool = True) -> tuple[int, str, str]:
    result = run_make(stack, *args, check=check, timeout=RESTORE_TIMEOUT)
    return result.returncode, result.stdout, result.stderr


def _user_ids(stack: Stack) -> set[str]:
    return set(_superuser_sql(stack, "SELECT id FROM api.users").split())


@dataclass(frozen=True)
class Failure:
    """A request of the load that did not succeed: what came back, and its id in the logs."""

    operation: str
    sent: float
    answered: float
    outcome: str
    request_id: str


@dataclass
class Writes:
    """Users created through the api under load, each with when it was sent and acknowledged, and
    every request that failed."""

    stack: Stack
    headers: dict[str, str]
    acknowledged: list[tuple[float, float, str]] = field(default_factory=list)  # (sent, acked, id)
    failures: list[Failure] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, session: requests.Session) -> requests.Response:
        sent = time.time()
        response = self._send("create", sent, lambda: session.post(
            f"{self.stack.base_url}/api/users",
            json={"name": "Backed", "email": unique_email()},
            headers={**self.headers, "Idempotency-Key": uuid.uuid4().hex},
            timeout=15,
        ))  # fmt: skip
        if response.status_code == 201:
            with self._lock:
                self.acknowledged.append((sent, time.time(), response.json()["id"]))
        return response

    def read(self, session: requests.Session) -> requests.Response:
        url = f"{self.stack.base_url}/api/users?limit=5"
        return self._send("read", time.time(), lambda: session.get(url, headers=self.headers, timeout=15))

    def _send(self, operation: str, sent: float, request: Callable[[], requests.Response]) -> requests.Response:
        try:
            response = request()
        except requests.RequestException as error:
            self._failed(Failure(operation, sent, time.time(), type(error).__name__, ""))
            raise
        if not 200 <= response.status_code < 300:
            detail = response.json().get("detail", "") if "json" in response.headers.get("Content-Type", "") else ""
            outcome = f"{response.status_code} {detail}".strip()
            self._failed(Failure(operation, sent, time.time(), outcome, response.headers.get("X-Request-ID", "")))
        return response

    def _failed(self, failure: Failure) -> None:
        with self._lock:
            self.failures.append(failure)

    def explain(self, failures: list[Failure]) -> str:
        """Each failure with what nginx and the services logged under its request id."""
        logs = self.stack.compose("logs", "--no-color", "nginx", "api", "auth", check=False).stdout.splitlines()
        lines = []
        for failure in failures:
            lines.append(f"{failure.operation} sent at {failure.sent:.1f}: {failure.outcome} ({failure.request_id})")
            lines += [f"    {line}" for line in logs if failure.request_id and failure.request_id in line]
        return "\n".join(lines)


def _spans(writes: Writes) -> float:
    """Seconds from the first acknowledged write until now."""
    return time.time() - writes.acknowledged[0][1] if writes.acknowledged else 0.0


def _writes(stack: Stack, http: requests.Session) -> Writes:
    return Writes(stack, sign_in(stack, http, register(stack, http)))


def _untouched_state(stack: Stack) -> dict[str, object]:
    """What a refused restore must leave as it was: the containers, the data, the repositories."""
    return {
        "containers": {
            cid: docker("inspect", "-f", "{{.State.StartedAt}} {{.RestartCount}}", cid).stdout.strip()
            for service in ("postgres", "api", "auth", "backup")
            for cid in stack.container_ids(service)
        },
        "users": _superuser_sql(stack, "SELECT count(*), max(created_at) FROM api.users"),
        "data_dir": docker("exec", stack.container_id("postgres"), "ls", "-a", "/var/lib/postgresql/data").stdout,
        "backups": _labels(stack),
    }


# -- tests --------------------------------------------------------------------------------------


def test_backup_goes_to_both_repositories_encrypted_and_is_listed(backups: Stack) -> None:
    marker = f"plaintext-{uuid.uuid4().hex}"  # in the database, and so in the backup's files
    _superuser_sql(backups, f"COMMENT ON SCHEMA api IS '{marker}'")
    # Incremental: only what changed since the first backups, the marker's catalog page among it.
    _, out, _ = _make(backups, "backup", "TYPE=incr")
    labels = re.findall(r"^label=(\S+) repo=(repo\d) size=(\S+)$", out, re.MULTILINE)
    assert {repo for _, repo, _ in labels} == {"repo1", "repo2"}, out
    assert all(size.endswith("B") for _, _, size in labels)
    # repo2 is the SFTP server: pgBackRest reads it back from there, and checks the WAL reaches both.
    assert any(repo == 2 for _, repo in _labels(backups))
    backup = backups.container_id("backup")
    check = docker("exec", backup, "wharf-backup", "pgbackrest", "check", check=False)  # every repository
    assert check.returncode == 0, check.stderr
    _, out, _ = _make(backups, "backups")
    for label, repo, _ in labels:
        assert re.search(rf"^{re.escape(label)}\s+{repo}\s+incr\s", out, re.MULTILINE), out
    assert "oldest restorable time: " in out
    assert "newest archived WAL:    0000" in out
    # The repository is encrypted: no file in it holds the database's text.
    grep = docker("exec", backup, "grep", "-rl", marker, "/var/lib/pgbackrest", check=False)
    assert grep.returncode == 1, grep.stdout
    assert (
        docker(
            "exec",
            backups.container_id("postgres"),
            "grep",
            "-rlq",
            marker,
            "/var/lib/postgresql/data/base",
            check=False,
        ).returncode
        == 0
    ), "the marker is not in the database's files: the check above proves nothing"


BAD_TARGETS = {
    "future": ("AT=2999-01-01 00:00:00+00", "is in the future"),
    "unparsable": ("AT=yesterday at noon", "AT must be a time with its UTC offset"),
    "no offset": ("AT=2026-01-01 00:00:00", "AT must be a time with its UTC offset"),
    "impossible date": ("AT=2026-02-31 10:00:00+00", "is not a valid time"),
    "before the oldest backup": ("AT=2001-01-01 00:00:00+00", "is before the oldest restorable time"),
    "unknown label": ("LABEL=20010101-000000F", "no backup labelled '20010101-000000F'"),
    "both": ("AT=2026-01-01 00:00:00+00 LABEL=x", "give AT or LABEL, not both"),
}


def test_restore_refuses_bad_input_and_touches_nothing(backups: Stack) -> None:
    before = _untouched_state(backups)

    def restore(setting: str) -> tuple[int, str, str]:
        return _make(backups, "restore", *re.split(r" (?=[A-Z]+=)", setting), check=False)

    # All at once: each only reads the repositories, and none may touch anything.
    with ThreadPoolExecutor(max_workers=len(BAD_TARGETS)) as pool:
        results = {name: pool.submit(restore, setting) for name, (setting, _) in BAD_TARGETS.items()}
    for name, (_setting, reason) in BAD_TARGETS.items():
        code, out, err = results[name].result()
        refusals = [line for line in err.splitlines() if line.startswith("refused: ")]
        assert code != 0, name
        assert len(refusals) == 1, f"{name}: {err}"
        assert reason in refusals[0], f"{name}: {err}"
        assert "Traceback" not in err + out, name
        assert "stopping" not in out, name
    assert _untouched_state(backups) == before
    # A bad schedule stops the backup service at start with one configuration error line.
    bad = backups.compose(
        "run", "--rm", "--no-deps", "-T", "-e", "BACKUP_DIFF_SCHEDULE=every day", "backup-restore", "serve", check=False
    )
    assert bad.returncode == 78
    assert "configuration error: BACKUP_DIFF_SCHEDULE must be 'off' or a cron expression" in bad.stderr


def test_point_in_time_restore_undoes_a_mistaken_delete(backups: Stack) -> None:
    existing = _user_ids(backups)  # rows from before the load: there at the target too
    with requests.Session() as http:
        writes = _writes(backups, http)
        token_before = writes.headers
        with Load({"create": writes.create, "read": writes.read}, threads=3, pace_seconds=0.05) as load:
            assert until(lambda: len(writes.acknowledged) >= 30, 120), "the load wrote too little"
            # A backup under the load: the restore below starts from it (the newest before the target).
            _, out, _ = _make(backups, "backup", "TYPE=incr")
            assert re.search(r"^label=\S+I repo=repo1 ", out, re.MULTILINE), out
            target = datetime.now(UTC)
            count_at_target = len(writes.acknowledged)
            assert until(lambda: len(writes.acknowledged) >= count_at_target + 30, 120)
        counts = load.stop()
    # Nothing disturbs the stack while the load runs, the backup and archiving beside it: every request succeeds.
    assert not writes.failures, f"{dict(sorted(counts.items()))}\n{writes.explain(writes.failures)}"
    assert counts["create 201"] >= 60, counts
    _superuser_sql(backups, "DELETE FROM api.users")
    deleted_at = datetime.now(UTC)
    assert _superuser_sql(backups, "SELECT count(*) FROM api.users") == "0"
    # The operator restores once the mistake itself is archived (at most archive_timeout later).
    assert until(_archived_after(backups, deleted_at), ARCHIVE_TIMEOUT + PUSH_ALLOWANCE + 30)

    at = target.strftime("%Y-%m-%d %H:%M:%S.%f+00")
    code, out, err = _make(backups, "restore", f"AT={at}")
    assert code == 0, err
    assert "restored to " in out

    # Exactly the rows of the target: every one acknowledged before it, none sent after it; of
    # those in flight across it (sent before, acknowledged after) each may or may not be there.
    present = _user_ids(backups)
    before = {uid for _sent, acked, uid in writes.acknowledged if acked < target.timestamp()}
    after = {uid for sent, _acked, uid in writes.acknowledged if sent > target.timestamp()}
    in_flight = {uid for _sent, _acked, uid in writes.acknowledged} - before - after
    assert before, "no write was acknowledged before the target"
    assert after, "no write was sent after the target"
    assert existing | before <= present, f"{len((existing | before) - present)} rows there at the target are missing"
    assert not (after & present), f"{len(after & present)} rows written after the target came back"
    assert present <= existing | before | in_flight, f"rows from nowhere: {present - existing - before - in_flight}"
    # The stack serves them, and a token issued before the target still verifies.
    some = sorted(before)[0]
    served = requests.get(f"{backups.base_url}/api/users/{some}", headers=token_before, timeout=15)
    assert served.status_code == 200, served.text
    for c in backups.containers():  # each one's own check, run now (Docker's first one is an interval away)
        if c["State"] == "running":
            wait_healthy(str(c["ID"]), timeout=0)


def test_verification_catches_a_damaged_backup(backups: Stack) -> None:
    code, out, err = _make(backups, "backup-verify")
    assert code == 0, err
    assert re.search(r"^verified: backup \S+ restores, starts and answers", out, re.MULTILINE), out
    # Every part of the page is there after a verification, not only its result.
    page = _metrics(backups)
    assert _sample(page, "wharf_backup_verify_ok") == 1
    assert _sample(page, "wharf_backup_info_ok") == 1
    assert len(_values(page, "wharf_backup_last_success_timestamp_seconds")) >= 2, page  # full, incr
    assert min(_values(page, "wharf_backup_last_success_timestamp_seconds")) > 0
    assert _sample(page, "wharf_backup_oldest_restorable_timestamp_seconds") > 0
    assert _sample(page, "wharf_backup_archive_last_success_timestamp_seconds") > 0

    # Damage one file of the newest backup in repo1, as a failing disk or a bad copy would.
    backup = backups.container_id("backup")
    labels = _labels(backups)
    newest, in_repo1 = labels[-1][0], [label for label, repo in labels if repo == 1][-1]
    damaged = docker(
        "exec", backup, "bash", "-c",
        f"f=$(find /var/lib/pgbackrest/backup/wharf/{in_repo1}/pg_data -type f -size +8k | sort | head -n1); "
        "printf 'damaged' | dd of=\"$f\" bs=1 seek=4096 conv=notrunc status=none && echo \"$f\"",
    ).stdout.strip()  # fmt: skip
    assert damaged, "no file to damage"
    code, out, err = _make(backups, "backup-verify", check=False)
    assert code != 0
    assert "FAILED: pgbackrest verify found damage in repo1" in err
    assert f"verification FAILED for backup {newest}" in err
    assert "Traceback" not in err
    page = _metrics(backups)
    assert _sample(page, "wharf_backup_verify_ok") == 0
    assert _sample(page, "wharf_backup_verify_last_run_timestamp_seconds") > _sample(
        page, "wharf_backup_verify_last_success_timestamp_seconds"
    )


def test_lost_disk_is_restored_from_the_off_host_repository_to_within_archive_timeout(backups: Stack) -> None:
    """The host's disk is gone with both volumes on it, the data and repository 1: make restore
    takes the off-host repository, and the backup service fills a new repository 1 again. Postgres
    has just restarted: archive_timeout holds from its start (the backup service wakes its checkpointer)."""
    woken = _checkpointer_wakes(backups)
    backups.compose("restart", "postgres")
    assert until(lambda: _checkpointer_wakes(backups) > woken, 60), "the restarted postgres was not woken"
    with requests.Session() as http:
        writes = _writes(backups, http)
        with Load({"create": writes.create}, threads=2, pace_seconds=0.1, max_seconds=300) as load:
            # Writes for a few archive_timeouts, so some are older than it when the disk goes.
            assert until(lambda: _spans(writes) > 3 * ARCHIVE_TIMEOUT, 180), "the load wrote too little"
            # The disk is gone: postgres dies, and its volumes are removed while the load goes on.
            archiver = _superuser_sql(
                backups, "SELECT last_archived_wal, last_archived_time, failed_count FROM pg_stat_archiver"
            )
            current = _superuser_sql(backups, "SELECT pg_walfile_name(pg_current_wal_lsn())")
            killing_at = time.time()
            backups.compose("kill", "postgres")
            lost_at = time.time()
        load.stop()
    # Until postgres is killed every request succeeds; after, writes fail (503) until the restore.
    before_the_loss = [f for f in writes.failures if f.answered < killing_at]
    assert not before_the_loss, writes.explain(before_the_loss)
    backups.compose("rm", "--force", "--stop", "postgres", "postgres-check", "backup")
    docker("volume", "rm", f"{backups.project}_pgdata", f"{backups.project}_pgbackrest")

    started = time.monotonic()
    code, _, err = _make(backups, "restore")
    recovery_time = time.monotonic() - started
    assert code == 0, err

    present = _user_ids(backups)
    acknowledged = sorted((acked, uid) for _sent, acked, uid in writes.acknowledged if acked < lost_at)
    missing = [acked for acked, uid in acknowledged if uid not in present]
    safe_before = lost_at - ARCHIVE_TIMEOUT - PUSH_ALLOWANCE
    lost_old = [acked for acked in missing if acked < safe_before]
    assert not lost_old, (
        f"{len(lost_old)} writes acknowledged {lost_at - min(lost_old):.1f} to {lost_at - max(lost_old):.1f} s"
        f" before the loss are missing; at the loss postgres wrote WAL segment {current}, archived: {archiver}"
    )
    newest_kept = max((acked for acked, uid in acknowledged if uid in present), default=0.0)
    recovery_point = lost_at - newest_kept if not missing else lost_at - min(missing)
    print(
        f"\nlost disk: recovery point {recovery_point:.1f} s before the loss "
        f"({len(missing)} of {len(acknowledged)} acknowledged writes lost, archive_timeout {ARCHIVE_TIMEOUT} s); "
        f"recovery time (make restore) {recovery_time:.0f} s"
    )
    assert requests.get(f"{backups.base_url}/api/readyz", timeout=15).status_code == 200
    # The new, empty repository 1 gets a full backup of the restored database at once.
    assert until(lambda: 1 in {repo for _, repo in _labels(backups)}, 300, 2), "repository 1 has no backup"
