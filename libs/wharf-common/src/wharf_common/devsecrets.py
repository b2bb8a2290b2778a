"""Generate the development secrets a fresh clone needs, once; existing files are kept.

Run by the compose ``secrets`` one-shot service into ``deploy/compose/secrets/`` (whose
per-service directories git keeps empty). Production supplies its own files at the same paths.

Passwords follow their files (postgres and db-init set them from the files on every start), but a
key that encrypts data cannot be replaced without losing that data. So the data keys are also
kept in the project's ``datakeys`` volume, beside the volumes whose data they encrypt: another
clone, or a deleted and regenerated secrets directory, gets them back instead of new ones.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import itertools
import os
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# One directory per consumer, so each container sees only its own secrets.
PASSWORDS = (
    "postgres/password",
    "auth/db_password",
    "auth/redis_password",
    "api/db_password",
    "api/redis_password",
    "auth-mail/redis_password",  # auth's mail worker (wharf_auth.worker): a Redis user of its own
    "auth/mfa_encryption_key",  # the key auth encrypts second-factor secrets under (MFA_ENCRYPTION_KEY_FILE)
    # pgBackRest's repository cipher passphrase (deploy/backup/): keep a copy away from the host, as
    # no backup can be read without it.
    "backup/repo_cipher_pass",
)
# Keys that encrypt data in the project's volumes: kept with them (the module's docstring).
DATA_KEYS = ("auth/mfa_encryption_key", "backup/repo_cipher_pass")
# Ed25519 signing keys of the auth service (SIGNING_KEYS_DIR): all are published, and the newest one
# signs once SIGNING_KEY_ACTIVATION_SECONDS have passed since the UTC time in its name.
SIGNING_KEYS_DIR = "auth/signing-keys"
KEY_NAME_FORMAT = "%Y%m%dT%H%M%SZ"
REDIS_ACL = "redis/users.acl"
# The edge's self-signed development certificate (nginx reads /run/secrets/nginx/tls.{crt,key} on
# every TLS handshake, so a replaced certificate needs no restart).
TLS_CERT = "nginx/tls.crt"
TLS_KEY = "nginx/tls.key"
# The edge's user (nginx's uid): the acme service (compose profile `acme`) runs as it and renames
# the certificates it obtains into the edge's directory, so that directory is handed to it.
EDGE_DIR = "nginx"
EDGE_UID = 101
TLS_NAMES = ("localhost",)
TLS_ADDRESSES = ("127.0.0.1", "::1")
TLS_VALID_DAYS = 365
TLS_RENEW_BEFORE = timedelta(days=30)


def _write(path: Path, content: str) -> None:
    """Atomic write, world-readable: each container reads its directory as its own non-root user.

    The top directory is 0700, which keeps other users of the host out.
    """
    path.parent.mkdir(mode=0o755, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _ed25519_pem() -> str:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# What auth needs of RQ's keys to queue a mail (a job hash, the queue's list, the set of queues);
# the queue is wharf_auth.mail.QUEUE. The mail worker may touch RQ's keys and channels, nothing else.
AUTH_QUEUE_KEYS = "~rq:queues ~rq:queue:auth-mail ~rq:job:*"
MAIL_WORKER_KEYS = "~rq:* resetchannels &rq:*"


def redis_acl(auth_password: str, api_password: str, mail_password: str) -> str:
    """One Redis user per service, each confined to its own keys; no default user. RQ reads the
    server's version (INFO) before it queues or takes a job, hence ``+info`` for auth and its worker."""

    def digest(password: str) -> str:
        return hashlib.sha256(password.encode()).hexdigest()

    return (
        "user default off resetkeys resetchannels -@all\n"
        f"user auth on #{digest(auth_password)} resetkeys ~auth:* {AUTH_QUEUE_KEYS} resetchannels &wharf:* "
        "+@all -@admin -@dangerous +info\n"
        f"user api on #{digest(api_password)} resetkeys ~api:* resetchannels &wharf:* +@all -@admin -@dangerous\n"
        f"user auth-mail on #{digest(mail_password)} resetkeys {MAIL_WORKER_KEYS} "
        "+@all -@admin -@dangerous +info\n"
    )


def add_signing_key(directory: Path) -> str:
    """A new Ed25519 key named by its UTC creation time: auth publishes it at once and signs with it
    once its SIGNING_KEY_ACTIVATION_SECONDS have passed (counted from the time in the name)."""
    while True:
        name = f"{SIGNING_KEYS_DIR}/{datetime.now(UTC).strftime(KEY_NAME_FORMAT)}.pem"
        if not (directory / name).exists():
            break
        time.sleep(1)  # names have one-second resolution and must stay unique and ordered
    _write(directory / name, _ed25519_pem())
    return name


def retire_signing_keys(directory: Path, retire_after: timedelta) -> list[str]:
    """Remove keys superseded longer ago than ``retire_after`` (their tokens have expired)."""
    keys = sorted((directory / SIGNING_KEYS_DIR).glob("*.pem"))
    now = datetime.now(UTC)
    retired = []
    for older, newer in itertools.pairwise(keys):
        try:
            superseded_at = datetime.strptime(newer.stem, KEY_NAME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            continue  # not a name this tool wrote: leave it to the operator
        if now - superseded_at > retire_after:
            older.unlink()
            retired.append(older.name)
    return retired


def self_signed_certificate(
    names: tuple[str, ...] = TLS_NAMES,
    addresses: tuple[str, ...] = TLS_ADDRESSES,
    days: int = TLS_VALID_DAYS,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[str, str]:
    """(certificate PEM, private key PEM): a server certificate for local names only, for ``key``
    or a new ECDSA P-256 key."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.now(UTC)
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def _certificate_needs_renewal(directory: Path) -> bool:
    """Missing, or our own development certificate expiring soon. A certificate someone put there
    (not self-signed for localhost by this tool) is never replaced, however close its expiry."""
    cert_path, key_path = directory / TLS_CERT, directory / TLS_KEY
    if not cert_path.exists() and not key_path.exists():
        return True
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False  # not ours to judge: nginx reports a broken certificate at start-up
    ours = (
        certificate.issuer == certificate.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_NAMES[0])])
    )
    return ours and certificate.not_valid_after_utc - datetime.now(UTC) < TLS_RENEW_BEFORE


def _edge_key(directory: Path) -> ec.EllipticCurvePrivateKey | None:
    """The edge's existing ECDSA key, kept when its certificate is renewed: nginx reads the pair on
    every handshake, and a certificate replaced alone (one rename) is never seen with the wrong key."""
    try:
        key = serialization.load_pem_private_key((directory / TLS_KEY).read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _restore_data_keys(directory: Path, kept: Path) -> list[str]:
    """Data keys missing from ``directory`` copied back from ``kept``; their names."""
    restored = []
    for name in DATA_KEYS:
        path, copy = directory / name, kept / name
        if not path.exists() and copy.exists():
            _write(path, copy.read_text(encoding="utf-8"))
            restored.append(name)
    return restored


def _keep_data_keys(directory: Path, kept: Path) -> None:
    """A copy in ``kept`` of each data key it does not hold yet (the first one seen stays)."""
    for name in DATA_KEYS:
        path, copy = directory / name, kept / name
        if path.exists() and not copy.exists():
            copy.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write(copy, path.read_text(encoding="utf-8"))
            copy.chmod(0o600)  # read by no service: only this tool restores it


def generate(directory: Path, kept: Path | None = None) -> list[str]:
    """Fill ``directory`` with what is missing; with ``kept``, data keys come from and go to it."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    created = [f"{name} (kept)" for name in _restore_data_keys(directory, kept)] if kept else []
    for name in PASSWORDS:
        path = directory / name
        if not path.exists():
            _write(path, secrets.token_urlsafe(32))
            created.append(name)
    if kept:
        _keep_data_keys(directory, kept)
    if not any((directory / SIGNING_KEYS_DIR).glob("*.pem")):
        created.append(add_signing_key(directory))
    if _certificate_needs_renewal(directory):
        key = _edge_key(directory)
        certificate, key_pem = self_signed_certificate(key=key)
        if key is None:
            _write(directory / TLS_KEY, key_pem)  # key first: a certificate never points at a missing key
            created.append(TLS_KEY)
        _write(directory / TLS_CERT, certificate)
        created.append(TLS_CERT)
    edge = directory / EDGE_DIR
    edge.mkdir(mode=0o755, exist_ok=True)
    if os.geteuid() == 0 and (edge.stat().st_uid, edge.stat().st_gid) != (EDGE_UID, EDGE_UID):
        os.chown(edge, EDGE_UID, EDGE_UID)
    # Derived from the password files on every run, so it always matches them.
    acl = redis_acl(
        (directory / "auth/redis_password").read_text().strip(),
        (directory / "api/redis_password").read_text().strip(),
        (directory / "auth-mail/redis_password").read_text().strip(),
    )
    acl_path = directory / REDIS_ACL
    if not acl_path.exists() or acl_path.read_text() != acl:
        _write(acl_path, acl)
        created.append(REDIS_ACL)
    return created


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default="/secrets", type=Path)
    parser.add_argument(
        "--kept",
        type=Path,
        metavar="DIRECTORY",
        help="where the data keys are kept beside the data they encrypt (restored from it when missing)",
    )
    parser.add_argument(
        "--rotate-signing-key",
        action="store_true",
        help="add a new signing key: auth publishes it at once and signs with it SIGNING_KEY_ACTIVATION_SECONDS "
        "after the time in its name",
    )
    parser.add_argument(
        "--retire-after",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="with --rotate-signing-key: remove keys superseded longer ago than this (default 3600, which "
        "exceeds the signing-key activation delay plus the access-token lifetime plus the JWKS cache time)",
    )
    args = parser.parse_args()
    created = generate(args.directory, args.kept)
    print(
        f"development secrets in {args.directory}: " + (f"created {', '.join(created)}" if created else "all present")
    )
    if args.rotate_signing_key:
        print(f"signing key added: {add_signing_key(args.directory)}")
        retired = retire_signing_keys(args.directory, timedelta(seconds=args.retire_after))
        print("retired: " + (", ".join(retired) if retired else "none"))


if __name__ == "__main__":
    main()
