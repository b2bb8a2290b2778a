"""Accounts and tokens: register, login, refresh, logout, me, password change, JWKS."""

from __future__ import annotations

import hashlib
import logging
import secrets
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy import func, select, update

from wharf_auth import events, revocations
from wharf_auth import passwords as policy
from wharf_auth.keys import KeyRing, SigningKeyError
from wharf_auth.limits import Limit, LoginLimiter, email_key, ip_key
from wharf_auth.models import Account, RefreshToken
from wharf_auth.passwords import Passwords
from wharf_auth.settings import AuthSettings
from wharf_common import authn
from wharf_common.authn import unauthorized
from wharf_common.db import get_session, insert_unique
from wharf_common.openapi import Response as Doc
from wharf_common.openapi import operation
from wharf_common.problems import Problem
from wharf_common.revocation import Revocation
from wharf_common.settings import CONFIG_ERROR_EXIT_CODE
from wharf_common.tokens import MAX_LEEWAY_SECONDS, TokenVerifier
from wharf_common.validation import NO_CONTROL_CHARACTERS, Email, Name, json_object, parse_body, validate

bp = Blueprint("auth", __name__)


# Never stripped or truncated; the policy checks length. The bound only stops absurd bodies early.
Password = Annotated[str, StringConstraints(max_length=4096)]
LoginEmail = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320, pattern=NO_CONTROL_CHARACTERS)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RegisterBody(Strict):
    email: Email
    password: Password
    name: Name


class LoginBody(Strict):
    email: LoginEmail
    password: Password


class RefreshBody(Strict):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class PasswordChangeBody(Strict):
    current_password: Password
    new_password: Password


class AccountOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    created_at: datetime


class MeOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    roles: list[str]


class TokenPair(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    refresh_token: str


class PublicKey(BaseModel):
    model_config = ConfigDict(extra="allow")

    kty: str
    kid: str
    use: str
    alg: str


class JwkSet(BaseModel):
    keys: list[PublicKey]


def _settings() -> AuthSettings:
    return current_app.config["SETTINGS"]


def _passwords() -> Passwords:
    return current_app.extensions["wharf.auth.passwords"]


def _keyring() -> KeyRing:
    return current_app.extensions["wharf.auth.keyring"]


def _limiter() -> LoginLimiter:
    return current_app.extensions["wharf.auth.limiter"]


def _now() -> datetime:
    return datetime.now(UTC)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


M = TypeVar("M", bound=BaseModel)


def _parse_with_password_policy(model: type[M], field: str, email: str | None) -> M:
    """The body as ``model``, or a 422 listing every failing field: the password policy's reasons
    for ``field`` together with the schema's errors for the others."""
    data = json_object()
    password = data.get(field)
    context = email if email is not None else data.get("email")
    reasons = (
        policy.problems(password, email=context.strip() if isinstance(context, str) else None)
        if isinstance(password, str)
        else []
    )
    return validate(model, data, extra_errors=[{"field": field, "message": f"Password {r}."} for r in reasons])


def _account_json(account: Account) -> dict[str, Any]:
    return {
        "id": str(account.id),
        "email": account.email,
        "name": account.name,
        "created_at": account.created_at.isoformat(),
    }


def _issue_tokens(account: Account, family_id: uuid.UUID) -> dict[str, Any]:
    """A new access token and a new refresh token in ``family_id``; the caller commits."""
    settings = _settings()
    access, _claims = _keyring().sign_access_token(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        subject=str(account.id),
        roles=list(account.roles or []),
        family_id=str(family_id),
        ttl=settings.access_token_ttl_seconds,
    )
    refresh = secrets.token_urlsafe(32)
    get_session().add(
        RefreshToken(
            id=uuid.uuid4(),
            account_id=account.id,
            family_id=family_id,
            token_hash=_hash_token(refresh),
            expires_at=_now() + timedelta(seconds=settings.refresh_token_ttl_seconds),
        )
    )
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": settings.access_token_ttl_seconds,
        "refresh_token": refresh,
    }


def _covering_expiry() -> float:
    """When every access token issued until now has expired (TTL plus the verifiers' leeway)."""
    return _now().timestamp() + _settings().access_token_ttl_seconds + MAX_LEEWAY_SECONDS


def _no_store(response: Any) -> Any:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/register")
@operation(
    "Create an account",
    body=RegisterBody,
    responses={201: Doc("The new account", AccountOut), 409: "An account with this email exists"},
    tags=("accounts",),
)
def register() -> ResponseReturnValue:
    """Create an account (role ``user``; roles cannot be chosen here)."""
    body = _parse_with_password_policy(RegisterBody, "password", None)
    account = Account(id=uuid.uuid4(), email=body.email, name=body.name, password_hash=_passwords().hash(body.password))
    insert_unique(account, "An account with this email already exists.")
    events.emit("register", account_id=account.id)
    response = jsonify(_account_json(account))
    response.status_code = 201
    return response


LOGIN_FAILED = "Invalid email or password."


@bp.post("/login")
@operation(
    "Sign in: an access token and a refresh token",
    body=LoginBody,
    responses={
        200: Doc("Tokens", TokenPair, headers=("Cache-Control",)),
        401: "Wrong email or password",
        429: Doc("Too many failed attempts", problem=True, headers=("Retry-After",)),
    },
    tags=("tokens",),
)
def login() -> ResponseReturnValue:
    body = parse_body(LoginBody)
    settings = _settings()
    email = body.email.lower()
    account_limit = Limit(email_key(email), settings.login_max_failures)
    ip_limit = Limit(ip_key(request.remote_addr or "unknown"), settings.ip_max_failures)
    limiter = _limiter()
    wait = limiter.retry_after([account_limit, ip_limit])
    if wait is not None:
        events.emit("login_locked", email=email, level=logging.WARNING)
        raise Problem(
            429,
            "Too many failed sign-in attempts; try again later.",
            slug="too-many-requests",
            headers={"Retry-After": str(wait)},
        )
    session = get_session()
    account = session.scalars(select(Account).where(func.lower(Account.email) == email)).one_or_none()
    if not _passwords().verify(account.password_hash if account else None, body.password) or account is None:
        limiter.record_failure([account_limit, ip_limit])
        events.emit("login_failure", email=email, level=logging.WARNING)
        raise unauthorized(LOGIN_FAILED)
    limiter.reset(account_limit)
    if _passwords().needs_rehash(account.password_hash):
        account.password_hash = _passwords().hash(body.password)
        account.updated_at = _now()
    tokens = _issue_tokens(account, uuid.uuid4())
    session.commit()
    events.emit("login_success", account_id=account.id)
    return _no_store(jsonify(tokens))


@bp.post("/refresh")
@operation(
    "Trade a refresh token for new tokens (each refresh token works once)",
    body=RefreshBody,
    responses={200: Doc("Tokens", TokenPair, headers=("Cache-Control",)), 401: "Invalid, used or revoked"},
    tags=("tokens",),
)
def refresh() -> ResponseReturnValue:
    """Rotate a refresh token. Presenting one that was already used revokes its whole family."""
    body = parse_body(RefreshBody)
    token_hash = _hash_token(body.refresh_token)
    session = get_session()
    now = _now()
    # Race-safe: of two concurrent refreshes with the same token, only one UPDATE matches.
    claimed = session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.token_hash == token_hash,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(RefreshToken.account_id, RefreshToken.family_id)
    ).one_or_none()
    if claimed is None:
        existing = session.scalars(select(RefreshToken).where(RefreshToken.token_hash == token_hash)).one_or_none()
        if existing is not None and existing.used_at is not None:
            session.execute(
                update(RefreshToken)
                .where(RefreshToken.family_id == existing.family_id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            # The access tokens of the stolen session die too, at every service.
            family = Revocation("family", str(existing.family_id), _covering_expiry())
            revocations.record(session, family)
            session.commit()
            revocations.announce(family)
            events.emit("refresh_reuse_detected", account_id=existing.account_id, level=logging.WARNING)
        else:
            session.rollback()
        raise unauthorized("Invalid, expired or revoked refresh token.")
    account = session.get(Account, claimed.account_id)
    if account is None:
        session.rollback()
        raise unauthorized("Invalid, expired or revoked refresh token.")
    tokens = _issue_tokens(account, claimed.family_id)
    session.commit()
    events.emit("refresh", account_id=account.id)
    return _no_store(jsonify(tokens))


def _authenticate() -> tuple[Account, dict[str, Any]]:
    """The account behind the Bearer access token, checked against revocations in the database."""
    claims = current_app.extensions[authn.EXTENSION].authenticate().claims
    try:
        account_id = uuid.UUID(claims["sub"])
    except ValueError:
        raise unauthorized() from None
    account = get_session().get(Account, account_id)
    if account is None:
        raise unauthorized()
    if account.tokens_valid_after is not None and float(claims["iat"]) < account.tokens_valid_after.timestamp():
        raise unauthorized()
    return account, claims


def _family_id(claims: dict[str, Any]) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(claims.get("fid")))
    except ValueError:
        return None


@bp.post("/logout")
@operation(
    "End the session of this access token",
    responses={204: Doc("Signed out")},
    tags=("tokens",),
    bearer=True,
)
def logout() -> ResponseReturnValue:
    """End the session: this access token, every token of its login family, its refresh tokens."""
    account, claims = _authenticate()
    session = get_session()
    ended = [Revocation("jti", claims["jti"], float(claims["exp"]) + MAX_LEEWAY_SECONDS)]
    family_id = _family_id(claims)
    if family_id is not None:
        ended.append(Revocation("family", str(family_id), _covering_expiry()))
        session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.family_id == family_id,
                RefreshToken.account_id == account.id,
                RefreshToken.revoked_at.is_(None),
            )
            .values(revoked_at=_now())
        )
    for revocation in ended:
        revocations.record(session, revocation)
    revocations.delete_expired(session)
    session.commit()
    revocations.announce(*ended)
    events.emit("logout", account_id=account.id)
    return "", 204


@bp.get("/me")
@operation("The signed-in account", responses={200: Doc("The account", MeOut)}, tags=("accounts",), bearer=True)
def me() -> ResponseReturnValue:
    account, _claims = _authenticate()
    return _no_store(
        jsonify({"id": str(account.id), "email": account.email, "name": account.name, "roles": list(account.roles)})
    )


@bp.post("/password")
@operation(
    "Change the password; every session ends",
    body=PasswordChangeBody,
    responses={204: Doc("Changed"), 403: "The current password is wrong"},
    tags=("accounts",),
    bearer=True,
)
def change_password() -> ResponseReturnValue:
    account, _claims = _authenticate()
    body = _parse_with_password_policy(PasswordChangeBody, "new_password", account.email)
    if not _passwords().verify(account.password_hash, body.current_password):
        events.emit("password_change_failure", account_id=account.id, level=logging.WARNING)
        raise Problem(
            403,
            "The current password is wrong.",
            slug="wrong-password",
        )
    session = get_session()
    now = _now()
    account.password_hash = _passwords().hash(body.new_password)
    account.updated_at = now
    account.tokens_valid_after = now
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.account_id == account.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    everything_before = Revocation("account", str(account.id), _covering_expiry(), issued_before=now.timestamp())
    revocations.record(session, everything_before)
    session.commit()
    revocations.announce(everything_before)
    events.emit("password_changed", account_id=account.id)
    return "", 204


@bp.get("/.well-known/jwks.json")
@operation(
    "Public keys that verify access tokens (JWKS)",
    responses={200: Doc("The key set", JwkSet, headers=("Cache-Control",))},
    tags=("tokens",),
)
def jwks() -> ResponseReturnValue:
    response = jsonify(_keyring().jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def init_app(app: Flask, settings: AuthSettings) -> None:
    from wharf_common.tokens import JwksCache

    try:
        keyring = KeyRing(settings.signing_keys_dir, activation_seconds=settings.signing_key_activation_seconds)
    except SigningKeyError as exc:  # a configuration error: one line, then exit like load_settings
        print(f"configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(CONFIG_ERROR_EXIT_CODE) from None
    app.extensions["wharf.auth.keyring"] = keyring
    app.extensions["wharf.auth.passwords"] = Passwords(
        policy.make_hasher(settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism)
    )
    app.extensions["wharf.auth.limiter"] = LoginLimiter(app.extensions["wharf.redis"], settings.login_window_seconds)
    # Our own keys, read locally: no HTTP round trip, and a rotation is seen at once. Revocations
    # are checked in Postgres itself, so a logout takes effect here at once.
    verifier = TokenVerifier(
        JwksCache(keyring.jwks, ttl=0, min_refresh_interval=0),
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        leeway=5,
    )
    authn.init_app(app, authn.Authenticator(verifier, revocations.DatabaseCheck()))
    app.register_blueprint(bp)
