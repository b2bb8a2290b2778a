"""Typed access to what the auth service's app factory builds, besides the shared ones (wharf_common.extensions)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from wharf_auth.keys import KeyRing
from wharf_auth.limits import LoginLimiter
from wharf_auth.mfa import SecretBox
from wharf_auth.passwords import Passwords

KEY = "wharf_auth"


@dataclass(frozen=True)
class AuthExtensions:
    keyring: KeyRing
    passwords: Passwords
    limiter: LoginLimiter
    recovery_limiter: LoginLimiter  # requests for password-reset and verification mails
    mfa_secrets: SecretBox  # encrypts second-factor secrets at rest


def init_app(app: Flask, extensions: AuthExtensions) -> None:
    app.extensions[KEY] = extensions


def of(app: Flask | None = None) -> AuthExtensions:
    return (app or current_app).extensions[KEY]
