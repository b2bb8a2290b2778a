from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from wharf_common import devsecrets


def test_generate_once_then_reuse(tmp_path: Path) -> None:
    created = devsecrets.generate(tmp_path)
    assert "postgres/password" in created
    assert "redis/users.acl" in created
    password = (tmp_path / "postgres/password").read_text()
    assert len(password) >= 40
    assert devsecrets.generate(tmp_path) == []
    assert (tmp_path / "postgres/password").read_text() == password
    assert oct(tmp_path.stat().st_mode & 0o777) == "0o700"


def test_data_keys_follow_the_data_into_another_secrets_directory(tmp_path: Path) -> None:
    kept = tmp_path / "datakeys"
    first, second, elsewhere = tmp_path / "clone-1", tmp_path / "clone-2", tmp_path / "other-project"
    devsecrets.generate(first, kept)
    created = devsecrets.generate(second, kept)
    for name in devsecrets.DATA_KEYS:
        assert (second / name).read_text() == (first / name).read_text() == (kept / name).read_text()
        assert f"{name} (kept)" in created
        assert oct((kept / name).stat().st_mode & 0o777) == "0o600"
    # Passwords follow their files: new ones; and a project without the volume gets new keys too.
    assert (second / "postgres/password").read_text() != (first / "postgres/password").read_text()
    devsecrets.generate(elsewhere)
    for name in devsecrets.DATA_KEYS:
        assert (elsewhere / name).read_text() != (first / name).read_text()


def test_a_data_key_put_in_place_is_never_replaced_and_is_kept(tmp_path: Path) -> None:
    kept, directory = tmp_path / "datakeys", tmp_path / "secrets"
    (directory / "backup").mkdir(parents=True)
    (directory / "backup/repo_cipher_pass").write_text("the operator's own passphrase, 20+ chars")
    devsecrets.generate(directory, kept)
    assert (kept / "backup/repo_cipher_pass").read_text() == "the operator's own passphrase, 20+ chars"
    (directory / "backup/repo_cipher_pass").write_text("another one, put there later by hand")
    devsecrets.generate(directory, kept)
    assert (directory / "backup/repo_cipher_pass").read_text() == "another one, put there later by hand"


def test_redis_acl_has_no_default_user_and_no_plain_passwords(tmp_path: Path) -> None:
    devsecrets.generate(tmp_path)
    acl = (tmp_path / "redis/users.acl").read_text()
    assert "user default off" in acl
    for service in ("auth", "api"):
        assert (tmp_path / f"{service}/redis_password").read_text() not in acl
        assert f"user {service} on #" in acl
        assert f"~{service}:*" in acl
    # auth's mail worker: RQ's keys and channels only
    assert (tmp_path / "auth-mail/redis_password").read_text() not in acl
    (worker,) = [line for line in acl.splitlines() if line.startswith("user auth-mail on #")]
    assert "~rq:*" in worker
    assert "~auth:*" not in worker
    assert "&wharf:*" not in worker


def test_rotation_adds_a_newer_key_and_retires_only_long_superseded_ones(tmp_path: Path) -> None:
    devsecrets.generate(tmp_path)
    keys_dir = tmp_path / devsecrets.SIGNING_KEYS_DIR
    ancient = keys_dir / "20200101T000000Z.pem"
    ancient.write_text("old")
    superseded_just_now = keys_dir / "20200102T000000Z.pem"  # its successor is `first`, made just now
    superseded_just_now.write_text("old")
    (first,) = sorted(set(keys_dir.glob("*.pem")) - {ancient, superseded_just_now})

    added = devsecrets.add_signing_key(tmp_path)
    assert sorted(keys_dir.glob("*.pem"))[-1].name == Path(added).name  # the newest name: it signs once activated
    retired = devsecrets.retire_signing_keys(tmp_path, timedelta(hours=1))
    # Only `ancient` was superseded long ago (in 2020); the others must keep verifying.
    assert retired == [ancient.name]
    assert superseded_just_now.exists()
    assert first.exists()
    assert os.path.exists(tmp_path / added)


def test_tls_certificate_made_once_for_local_names_and_renewed_when_expiring(tmp_path: Path) -> None:
    from cryptography import x509

    created = devsecrets.generate(tmp_path)
    assert {devsecrets.TLS_CERT, devsecrets.TLS_KEY} <= set(created)
    pem = (tmp_path / devsecrets.TLS_CERT).read_bytes()
    certificate = x509.load_pem_x509_certificate(pem)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert b"PRIVATE KEY" in (tmp_path / devsecrets.TLS_KEY).read_bytes()
    assert devsecrets.generate(tmp_path) == []  # kept while valid
    assert (tmp_path / devsecrets.TLS_CERT).read_bytes() == pem

    soon, key = devsecrets.self_signed_certificate(days=10)  # inside the renewal margin
    (tmp_path / devsecrets.TLS_CERT).write_text(soon)
    (tmp_path / devsecrets.TLS_KEY).write_text(key)
    assert devsecrets.generate(tmp_path) == [devsecrets.TLS_CERT]
    renewed = x509.load_pem_x509_certificate((tmp_path / devsecrets.TLS_CERT).read_bytes())
    assert renewed.not_valid_after_utc > certificate.not_valid_after_utc - timedelta(days=1)
    # The key stays: nginx reads the pair on every handshake, and only the certificate is replaced.
    assert (tmp_path / devsecrets.TLS_KEY).read_text() == key
    assert renewed.public_key() == x509.load_pem_x509_certificate(soon.encode()).public_key()


def test_the_edge_directory_belongs_to_the_edge_user_when_run_as_root(tmp_path: Path) -> None:
    """The acme service (uid 101, as nginx) renames renewed certificates into it."""
    devsecrets.generate(tmp_path)
    edge = tmp_path / devsecrets.EDGE_DIR
    expected = (devsecrets.EDGE_UID, devsecrets.EDGE_UID) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    assert (edge.stat().st_uid, edge.stat().st_gid) == expected
    assert oct(edge.stat().st_mode & 0o777) == "0o755"


def test_a_certificate_put_there_by_ops_is_never_replaced(tmp_path: Path) -> None:
    """Only this tool's own localhost certificate is renewed; a real one stays, even near expiry."""
    devsecrets.generate(tmp_path)
    real, key = devsecrets.self_signed_certificate(names=("wharf.example.com",), addresses=(), days=3)
    (tmp_path / devsecrets.TLS_CERT).write_text(real)
    (tmp_path / devsecrets.TLS_KEY).write_text(key)
    assert devsecrets.generate(tmp_path) == []
    assert (tmp_path / devsecrets.TLS_CERT).read_text() == real
    (tmp_path / devsecrets.TLS_CERT).write_text("not a certificate")
    assert devsecrets.generate(tmp_path) == []
    assert (tmp_path / devsecrets.TLS_CERT).read_text() == "not a certificate"
