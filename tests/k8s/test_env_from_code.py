"""The environment each container gets is what its code reads, no more, and enough to start.

The names come from the code itself (the pydantic settings classes, which gunicorn_conf.py reads too,
provision.py, the nginx templates), so a setting a service adds or drops shows up here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import SecretStr

from wharf_api.settings import ApiSettings
from wharf_auth.settings import AuthSettings, MailWorkerSettings
from wharf_common import provision
from wharf_common.settings import CommonSettings

from .conftest import NGINX, dockerfile_env, nginx_defaults, nginx_effective_settings

if TYPE_CHECKING:
    from .conftest import Rendering, Workload

SETTINGS: dict[str, type[CommonSettings]] = {"api": ApiSettings, "auth": AuthSettings}
# What a URL held in a Secret (k8s/components/external-postgres) may look like, for the start-up check.
# Secrets a container does without unless the operator adds them, each with its reason.
OPTIONAL_SECRETS = {"smtp_password": "only for an SMTP server that wants a login (k8s/README.md)"}
SECRET_URL_STAND_IN = "postgresql://someone@db.example.internal:5432/wharf?sslmode=require"


def _settings_env_names(cls: type[CommonSettings]) -> set[str]:
    """Every variable a settings class reads: NAME for each field, and NAME_FILE (any field)."""
    fields = {name.upper() for name in cls.model_fields}
    return fields | {f"{name}_FILE" for name in fields}


def _runnable_env(overlay: Rendering, workload: Workload, container: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """The container's environment with secret files replaced by local stand-ins.

    Every ``*_FILE`` must name a file that a secret volume mounts into this very container.
    """
    mounted = workload.secret_files(container)
    env: dict[str, str] = {}
    for name, value in overlay.env(container).items():
        if isinstance(value, dict):
            assert "secretKeyRef" in value, f"{name}: unexpected valueFrom {value}"
            value = SECRET_URL_STAND_IN
        if name.endswith("_FILE"):
            assert value in mounted, f"{workload.name}/{container['name']}: {name}={value} is not mounted"
            local = tmp_path / name
            local.write_text(f"stand-in-for-{name.lower()}\n")
            value = str(local)
        env[name] = value
    return env


@pytest.mark.parametrize("service", ["api", "auth"])
@pytest.mark.parametrize("container_name", ["app", "migrate"])
def test_app_containers_set_only_names_the_code_reads_and_start_with_them(
    overlay: Rendering, service: str, container_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = service if container_name == "app" else container_name
    _check_settings_of(overlay, service, container, SETTINGS[service], tmp_path, monkeypatch)


def test_the_mail_worker_sets_only_names_the_code_reads_and_starts_with_them(
    overlay: Rendering, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It inherits auth's settings but signs no token and reads no second factor: its signing-key
    # directory and the second factor's key are never read.
    unused = {"signing_keys_dir", "mfa_encryption_key"}
    _check_settings_of(overlay, "auth-mail", "auth-mail", MailWorkerSettings, tmp_path, monkeypatch, unused=unused)


def _check_settings_of(
    overlay: Rendering,
    workload_name: str,
    container_name: str,
    cls: type[CommonSettings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unused: frozenset[str] | set[str] = frozenset(),
) -> None:
    service = workload_name
    workload = overlay.workload(workload_name)
    container = workload.container(container_name)
    # The migrate container shares the app's environment, as compose's *-migrate one-shots do.
    known = _settings_env_names(cls)  # gunicorn reads ServerSettings, a base of every service's settings
    names = set(overlay.env(container))
    assert names - known == set(), f"{service}/{container['name']} sets names no code reads"

    env = _runnable_env(overlay, workload, container, tmp_path)
    for name in _settings_env_names(cls):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = cls()  # raises if a required setting is missing or a value is malformed

    # Credentials come from files, never from plain variables.
    for field, info in cls.model_fields.items():
        if field in unused:
            continue
        if info.annotation is not None and SecretStr in getattr(info.annotation, "__args__", (info.annotation,)):
            assert field.upper() not in names
            if field in OPTIONAL_SECRETS:
                continue
            assert f"{field.upper()}_FILE" in names, f"{service}: {field} is not provided"
            assert getattr(settings, field) is not None
    # Paths the settings default to under /run/secrets (e.g. SIGNING_KEYS_DIR) are mounted.
    mounted = workload.secret_files(container)
    for field in set(cls.model_fields) - set(unused):
        value = getattr(settings, field)
        if isinstance(value, Path) and str(value).startswith("/run/secrets"):
            assert f"{value}/" in mounted or str(value) in mounted, f"{service}: {field}={value} is not mounted"


def test_required_settings_are_required_by_the_code(tmp_path: Path) -> None:
    """Guards the guard: a settings class with a variable missing does refuse to load."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="redis_url"):
        ApiSettings(_env_file=None, database_url="postgresql://a@b/c")  # type: ignore[call-arg]


class _Recorded(Exception):
    pass


def test_db_init_sets_exactly_what_provision_reads(
    overlay: Rendering, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workload = overlay.workload("db-init")
    (container,) = workload.pod["containers"]
    env = _runnable_env(overlay, workload, container, tmp_path)

    read: set[str] = set()

    class RecordingEnv(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
            read.add(key)
            return super().get(key, default)

        def __getitem__(self, key: str) -> str:
            read.add(key)
            return super().__getitem__(key)

    connected: dict[str, Any] = {}

    def fake_connect(**kwargs: Any) -> None:
        connected.update(kwargs)
        raise _Recorded

    monkeypatch.setattr(os, "environ", RecordingEnv(env))
    monkeypatch.setattr(provision.psycopg2, "connect", fake_connect)
    with pytest.raises(_Recorded):  # got as far as connecting: nothing required was missing
        provision.main()
    assert read == set(env), "db-init's environment and what provision.py reads differ"
    assert connected["password"] == "stand-in-for-database_admin_password_file"
    if overlay.has("StatefulSet", "postgres"):
        assert connected["host"] == "postgres"


# The entrypoint's own checks (deploy/nginx/entrypoint.sh), repeated here on the rendered values.
NGINX_ON_OFF = ("NGINX_TLS", "NGINX_HTTPS_REDIRECT", "NGINX_MAINTENANCE")
NGINX_NOT_IN_VALUES = re.compile(r"[;{}\"'\\$#\n]")
DOCKER_DNS = "127.0.0.11"  # Docker's embedded DNS: no such server in a pod


def _template_names() -> set[str]:
    text = "\n".join(p.read_text() for p in (NGINX / "templates").rglob("*.template"))
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", text))


def _entrypoint_text() -> str:
    return (NGINX / "entrypoint.sh").read_text()


def _templates_text() -> str:
    return "\n".join(p.read_text() for p in (NGINX / "templates").rglob("*.template"))


def _fixed_in_templates(directive: str) -> list[str]:
    """The values a directive is given in the templates (fixed values, not settings)."""
    return re.findall(rf"^\s*{directive} ([^\s;$]+)", _templates_text(), re.MULTILINE)


def _files_of(directive: str) -> list[str]:
    """The files a directive names: fixed, or the default of the `map` that makes its variable
    (the TLS listener names its certificate through one, to read it on every handshake)."""
    text = _templates_text()
    files = []
    for value in re.findall(rf"^\s*{directive} ([^\s;]+);", text, re.MULTILINE):
        if value.startswith("$"):
            (value,) = re.findall(rf"map \S+ {re.escape(value)} {{\s*default (\S+);", text)
        files.append(value)
    return files


def _nginx(overlay: Rendering) -> tuple[Workload, dict[str, Any], dict[str, Any]]:
    workload = overlay.workload("nginx")
    (container,) = workload.pod["containers"]
    return workload, container, overlay.env(container)


def test_nginx_sets_only_its_settings_and_every_template_variable_has_a_value(overlay: Rendering) -> None:
    _, _, env = _nginx(overlay)
    settings = nginx_defaults()
    entrypoint = _entrypoint_text()
    # Guards the guard: each listed setting is read by a template or by the entrypoint by name.
    read = _template_names() | set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", entrypoint))
    assert set(settings) - read == set(), "defaults.env lists a setting nothing reads"
    assert set(env) - set(settings) == set(), "nginx gets variables that are not settings of the edge"
    # Values a template needs: the container's, the image's defaults, or ones the entrypoint derives.
    derived = set(re.findall(r"^\s*export ([A-Z][A-Z0-9_]*)=", entrypoint, re.MULTILINE))
    image_env = set(dockerfile_env(NGINX / "Dockerfile"))
    missing = _template_names() - set(env) - set(settings) - image_env - derived
    assert missing == set(), "a template variable has no value (the entrypoint exits 78)"


def test_nginx_settings_pass_the_entrypoint_checks(overlay: Rendering) -> None:
    """The values nginx starts with (defaults, then the image's ENV, then non-empty container
    values) pass what the entrypoint checks before `nginx -t`, and what TLS needs is mounted."""
    workload, container, env = _nginx(overlay)
    assert all(isinstance(v, str) for v in env.values()), "nginx settings are plain values"
    effective = nginx_effective_settings(env)
    for name, value in effective.items():
        assert not NGINX_NOT_IN_VALUES.search(value), f"{name}={value!r}: the entrypoint refuses it"
    for name in NGINX_ON_OFF:
        assert effective[name] in {"on", "off"}, name
    assert re.fullmatch(r"[1-9][0-9]*", effective["NGINX_DNS_INTERVAL"])
    assert re.fullmatch(r"[0-9]{1,5}", effective["NGINX_HTTPS_REDIRECT_PORT"])
    assert effective["NGINX_UPSTREAM_DISCOVERY"] in {"auto", "resolve", "per-request", "reload"}
    # `resolve` and `per-request` ask the template's resolver, Docker's DNS; `reload` uses the pod's
    # resolv.conf.
    (resolver,) = _fixed_in_templates("resolver")
    if effective["NGINX_UPSTREAM_DISCOVERY"] != "reload":
        assert resolver != DOCKER_DNS, "nginx would ask a DNS server that is not there"
    if effective["NGINX_HTTPS_REDIRECT"] == "on":
        assert effective["NGINX_TLS"] == "on", "NGINX_HTTPS_REDIRECT=on needs NGINX_TLS=on"
    if effective["NGINX_TLS"] == "on":
        mounted = workload.secret_files(container)
        files = _files_of("ssl_certificate") + _files_of("ssl_certificate_key")
        assert len(files) == 2, files
        for file in files:
            assert file in mounted, f"NGINX_TLS=on: {file} is not mounted"
