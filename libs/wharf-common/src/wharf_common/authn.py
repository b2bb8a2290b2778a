"""Bearer-token authentication for Flask routes, shared by every service.

A request is authenticated locally: the access token is verified against the issuer's public keys
(:mod:`wharf_common.tokens`) and checked against the in-memory revocation set
(:mod:`wharf_common.revocation`). No call to the auth service per request.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from flask import Flask, current_app, g, request

from wharf_common import metrics
from wharf_common.problems import Problem, unavailable
from wharf_common.revocation import RevocationsUnavailable
from wharf_common.tokens import InvalidToken, KeysUnavailable, TokenVerifier

ADMIN_ROLE = "admin"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the verified access token says."""

    subject: str
    roles: frozenset[str]
    claims: Mapping[str, Any]

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles


def unauthorized(detail: str = "Missing, invalid or revoked access token.", *, token_sent: bool = True) -> Problem:
    # RFC 6750 section 3: no error code when the request carried no credentials at all.
    challenge = 'Bearer realm="wharf", error="invalid_token"' if token_sent else 'Bearer realm="wharf"'
    return Problem(401, detail, slug="unauthorized", headers={"WWW-Authenticate": challenge})


def bearer_token() -> str:
    """The token of ``Authorization: Bearer <token>``, or a 401 problem."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise unauthorized("An access token is required (Authorization: Bearer).", token_sent=False)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("The Authorization header must be 'Bearer <access token>'.")
    return token.strip()


class RevocationCheck(Protocol):
    """Where revocations are looked up: the in-memory :class:`~wharf_common.revocation.RevocationSet`
    in the services, the database itself in auth. Raises ``RevocationsUnavailable`` when it cannot tell."""

    def is_revoked(self, claims: Mapping[str, Any]) -> bool: ...


class Authenticator:
    def __init__(self, verifier: TokenVerifier, revocations: RevocationCheck | None) -> None:
        self.verifier = verifier
        self.revocations = revocations

    def verify(self, token: str) -> dict[str, Any]:
        """Claims of a valid, unrevoked token; 401 for a bad token, 503 when we cannot tell."""
        outcome = metrics.TOKEN_VERIFICATIONS
        try:
            claims = self.verifier.verify(token)
        except KeysUnavailable:
            outcome.labels("unavailable").inc()
            raise unavailable("Token signing keys are not available yet; retry later.") from None
        except InvalidToken:
            outcome.labels("invalid").inc()
            raise unauthorized() from None
        if self.revocations is not None:
            try:
                revoked = self.revocations.is_revoked(claims)
            except RevocationsUnavailable:
                outcome.labels("unavailable").inc()
                raise unavailable("Token revocations cannot be checked right now; retry later.") from None
            if revoked:
                outcome.labels("revoked").inc()
                raise unauthorized()
        outcome.labels("valid").inc()
        return claims

    def authenticate(self) -> Principal:
        claims = self.verify(bearer_token())
        roles = claims.get("roles")
        principal = Principal(
            subject=claims["sub"],
            roles=frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else frozenset(),
            claims=claims,
        )
        g.principal = principal
        g.account_id = principal.subject  # picked up by the JSON log formatter
        return principal


KEY = "wharf_common.authn"  # the app's Authenticator in app.extensions


def init_app(app: Flask, authenticator: Authenticator) -> None:
    app.extensions[KEY] = authenticator


def authenticator(app: Flask | None = None) -> Authenticator:
    found: Authenticator | None = (app or current_app).extensions.get(KEY)
    assert found is not None, "authn.init_app was not called"
    return found


def require_auth(view: F) -> F:
    """Decorate a view: 401/503 unless the request carries a valid, unrevoked access token."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        authenticator().authenticate()
        return view(*args, **kwargs)

    wrapper.wharf_requires_auth = True  # type: ignore[attr-defined] - read by the OpenAPI builder
    return cast(F, wrapper)


def current_principal() -> Principal:
    return g.principal
