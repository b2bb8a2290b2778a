"""Posture checks: no secret in an image layer or in git, one Redis user per service.

(Non-root, read-only, capabilities, limits, unreachable data stores and the database roles are
checked in test_stack.py; every log line of every stack is scanned for secrets when the stack is
taken down, see ``assert_no_secret_in_logs`` in conftest.py.)
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from .conftest import ROOT, Stack, docker

pytestmark = pytest.mark.resilience

# Key material (a header followed by base64), not the header constant that libraries such as
# cryptography carry in their code.
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=]{40,}")
# Paths that would be a secret or a local environment baked into an image.
SECRET_PATHS = re.compile(r"(^|/)(\.env|secrets/[^/]+/[^/]+|[^/]*\.pem|[^/]*\.key|id_(rsa|ed25519))$")
SECRET_ENV = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE)[A-Z_]*=(?!$)", re.IGNORECASE)


def _layer_members(image: str) -> list[tuple[str, bytes]]:
    """(path, content) of every regular file in every layer of ``image``, as ``docker save`` has it."""
    saved = subprocess.run(["docker", "save", image], capture_output=True, check=True, timeout=180).stdout
    members: list[tuple[str, bytes]] = []
    with tarfile.open(fileobj=io.BytesIO(saved)) as archive:
        for entry in archive.getmembers():
            if not entry.name.endswith(".tar"):
                continue
            layer = archive.extractfile(entry)
            assert layer is not None
            with tarfile.open(fileobj=io.BytesIO(layer.read())) as files:
                for member in files.getmembers():
                    if member.isfile():
                        content = files.extractfile(member)
                        members.append((member.name, content.read() if content else b""))
    return members


@pytest.mark.parametrize("service", ["api", "auth", "nginx"])
def test_no_secret_in_any_image_layer(stack: Stack, service: str) -> None:
    image = json.loads(docker("inspect", stack.container_id(service)).stdout)[0]["Config"]["Image"]
    members = _layer_members(image)
    assert len(members) > 1000, f"{image}: too few files read to mean anything"
    stack_secrets = [p.read_bytes().strip() for p in stack.secrets_dir.rglob("*") if p.is_file()]
    assert stack_secrets, "the stack wrote no secrets?"
    for path, content in members:
        # Shared libraries are left out of the generic scan: crypto libraries (libgnutls) embed the
        # well-known keys of their own self-tests. The stack's real secrets are looked for in them too.
        if not content.startswith(b"\x7fELF"):
            assert not PRIVATE_KEY.search(content), f"{image}: a private key in {path}"
        assert not SECRET_PATHS.search(path), f"{image}: {path} looks like a secret file"
        for secret in stack_secrets:
            assert secret not in content, f"{image}: a secret of the running stack in {path}"
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    config_env = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]["Env"] or []
    for line in [*history.splitlines(), *config_env]:
        # Names of *_FILE settings are fine; a value for a password-like name is not.
        assert not SECRET_ENV.search(line.replace("_FILE=", "_FILE_PATH=")), f"{image}: {line}"


def test_no_secret_in_git() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout.split(b"\0")
    assert len(tracked) > 100
    for name in filter(None, tracked):
        path = Path(ROOT, name.decode())
        if path.is_symlink() or not path.is_file():
            continue
        assert not PRIVATE_KEY.search(path.read_bytes()), f"a private key is committed: {path}"
        if "secrets" in path.parts:
            assert path.name in {".gitignore", "README.md"}, f"a secret is committed: {path}"
    for local in (".env", "deploy/compose/secrets/auth/signing_key", "backups/x.dump", "test-artifacts/x.png"):
        ignored = subprocess.run(["git", "check-ignore", "-q", local], cwd=ROOT, check=False, timeout=30)
        assert ignored.returncode == 0, f"{local} must be ignored by git"


def _redis_as(stack: Stack, user: str, *command: str) -> str:
    password = stack.secret(f"{user}/redis_password")
    result = docker(
        "exec", "-e", f"REDISCLI_AUTH={password}", stack.container_id("redis"),
        "redis-cli", "--user", user, "--no-auth-warning", *command,
        check=False,
    )  # fmt: skip
    return (result.stdout + result.stderr).strip()


def test_each_service_reaches_only_its_own_redis_keys(stack: Stack) -> None:
    assert _redis_as(stack, "auth", "SET", "auth:posture-probe", "1", "EX", "60") == "OK"
    assert _redis_as(stack, "api", "SET", "api:posture-probe", "1", "EX", "60") == "OK"
    for user, foreign in (("api", "auth:posture-probe"), ("auth", "api:posture-probe")):
        for command in (("GET", foreign), ("SET", foreign, "x"), ("DEL", foreign)):
            assert "NOPERM" in _redis_as(stack, user, *command), (user, command)
        assert "NOPERM" in _redis_as(stack, user, "KEYS", "*"), user
        assert "NOPERM" in _redis_as(stack, user, "CONFIG", "GET", "*"), user
        assert "NOPERM" in _redis_as(stack, user, "FLUSHALL"), user
    assert _redis_as(stack, "auth", "GET", "auth:posture-probe") == "1"  # untouched by api
    # auth's mail worker: RQ's keys only, nothing of auth's or api's, no revocation channel
    for command in (("GET", "auth:posture-probe"), ("GET", "api:posture-probe"), ("PUBLISH", "wharf:revocations", "x")):
        assert "NOPERM" in _redis_as(stack, "auth-mail", *command), command
    assert _redis_as(stack, "auth-mail", "SET", "rq:posture-probe", "1", "EX", "60") == "OK"
    assert "NOPERM" in _redis_as(stack, "auth-mail", "KEYS", "*")
