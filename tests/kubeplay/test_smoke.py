"""The Kubernetes dev overlay, started from its rendered pod specs, serves the whole client flow
through its nginx Service: register, login, CRUD, refresh, logout, and the api seeing the logout;
a Job of the CronJob backup-full ran to completion beside it."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
import requests

from .conftest import PROJECT

pytestmark = pytest.mark.own_project(minutes=0.9)

PASSWORD = "correct horse battery staple"


def test_client_flow_through_the_nginx_service(k8s_edge: str) -> None:
    http = requests.Session()
    email = f"k8s-{uuid.uuid4().hex[:12]}@example.com"
    account = {"email": email, "password": PASSWORD, "name": "K8s"}
    registered = http.post(f"{k8s_edge}/auth/register", json=account, timeout=10)
    assert registered.status_code == 201, registered.text
    tokens = http.post(f"{k8s_edge}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10)
    assert tokens.status_code == 200, tokens.text
    headers = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
    assert http.get(f"{k8s_edge}/auth/me", headers=headers, timeout=10).json()["email"] == email

    # CRUD on the api, which checks the token against auth's JWKS through the auth Service.
    users = f"{k8s_edge}/api/users"
    created = http.post(users, json={"name": "Ada", "email": f"ada-{email}"}, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    location = k8s_edge + created.headers["Location"]
    read = http.get(location, headers=headers, timeout=10)
    assert read.json()["name"] == "Ada"
    patched = http.patch(
        location,
        json={"name": "Ada Lovelace"},
        headers={**headers, "If-Match": read.headers["ETag"], "Content-Type": "application/merge-patch+json"},
        timeout=10,
    )
    assert patched.status_code == 200, patched.text
    assert http.get(location, headers=headers, timeout=10).json()["name"] == "Ada Lovelace"
    assert http.delete(location, headers=headers, timeout=10).status_code == 204
    assert http.get(location, headers=headers, timeout=10).status_code == 404

    refreshed = http.post(
        f"{k8s_edge}/auth/refresh", json={"refresh_token": tokens.json()["refresh_token"]}, timeout=10
    )
    assert refreshed.status_code == 200, refreshed.text
    headers = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    assert http.get(users, headers=headers, timeout=10).status_code == 200

    # Logout: the api learns of it through auth's revocation list (REVOCATION_MAX_STALENESS_SECONDS).
    assert http.post(f"{k8s_edge}/auth/logout", headers=headers, timeout=10).status_code == 204
    deadline = time.monotonic() + 30
    while (status := http.get(users, headers=headers, timeout=10).status_code) == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status == 401


def test_errors_at_the_edge_are_problem_json(k8s_edge: str) -> None:
    missing = requests.get(f"{k8s_edge}/no/such/route", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == "application/problem+json"


def test_a_backup_job_of_the_cronjob_ran_to_completion(k8s_edge: str) -> None:
    """The fixture waited for the Job like any workload; its full backup is in the repository
    claim, encrypted, and postgres archives into it (pgBackRest's own check)."""
    postgres = f"{PROJECT}-postgres-0-postgres"
    info = subprocess.run(
        ["docker", "exec", postgres, "wharf-backup", "pgbackrest", "info", "--output=json"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    (stanza,) = json.loads(info.stdout)
    assert [b["type"] for b in stanza["backup"]] == ["full"]
    assert stanza["cipher"] == "aes-256-cbc"
    check = ["docker", "exec", postgres, "wharf-backup", "pgbackrest", "check"]
    assert subprocess.run(check, capture_output=True, text=True, timeout=120).returncode == 0
