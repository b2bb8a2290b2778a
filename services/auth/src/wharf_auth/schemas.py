"""The request and response bodies of the auth service (pydantic; the OpenAPI document shows them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

from wharf_common.validation import NO_CONTROL_CHARACTERS, Email, Name

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


# A mailed token (43 characters as issued); any other string is answered as an invalid token
# (400), a JWT included. The bound only stops absurd bodies early (422).
MailedToken = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class EmailBody(Strict):
    email: Email


class PasswordResetBody(Strict):
    token: MailedToken
    new_password: Password


class VerifyEmailBody(Strict):
    token: MailedToken


class Accepted(BaseModel):
    """The same answer whether or not an account has the address."""

    status: Literal["accepted"]
    detail: str


class AccountOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    created_at: datetime


class MeOut(BaseModel):
    id: uuid.UUID
    email: str
    email_verified: bool
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


class RevocationOut(BaseModel):
    kind: Literal["jti", "family", "account"]
    value: str
    exp: float
    issued_before: float | None


class RevocationList(BaseModel):
    revocations: list[RevocationOut]
