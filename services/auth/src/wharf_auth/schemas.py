"""The request and response bodies of the auth service (pydantic; the OpenAPI document shows them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

from wharf_auth import passwords
from wharf_common.validation import Documented, Email, Name, trimmed_text

# A password to check: never stripped or truncated. The bound only stops absurd bodies early.
Password = Annotated[str, StringConstraints(max_length=4096)]
# A password to set: the policy decides (wharf_auth.passwords, with reasons safe to show); its
# length bounds are in the schema, its other rules in the description.
NewPassword = Annotated[
    str,
    Documented(
        minLength=passwords.MIN_LENGTH,
        maxLength=passwords.MAX_LENGTH,
        description=(
            f"{passwords.MIN_LENGTH} to {passwords.MAX_LENGTH} characters, any Unicode, spaces included, never "
            "truncated. Refused with 422 (the reason in `errors`) when it is common (a list of breached "
            "passwords), repetitive, a predictable sequence, or built from the email address or the product name."
        ),
    ),
]
# Any email address an account could have (no syntax check: an unknown one is a failed sign-in).
LoginEmail = trimmed_text(320)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RegisterBody(Strict):
    email: Email
    password: NewPassword
    name: Name


class LoginBody(Strict):
    email: LoginEmail
    password: Password


class RefreshBody(Strict):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class PasswordChangeBody(Strict):
    current_password: Password
    new_password: NewPassword


# A mailed token (43 characters as issued); any other string is answered as an invalid token
# (400), a JWT included. The bound only stops absurd bodies early (422).
MailedToken = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class EmailBody(Strict):
    email: Email


class PasswordResetBody(Strict):
    token: MailedToken
    new_password: NewPassword


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
