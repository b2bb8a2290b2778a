"""The request and response bodies of the auth service (pydantic; the OpenAPI document shows them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, RootModel, StringConstraints

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


# -- the second factor --------------------------------------------------------------------------

TotpCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
# As shown (``abcd-efgh-ijkl-mnop``), any case, with or without the dashes.
RecoveryCodeText = Annotated[str, StringConstraints(min_length=16, max_length=19, pattern=r"^[A-Za-z2-7-]+$")]
# The challenge of a sign-in that awaits its second factor (43 characters as issued); any other
# string, an access token included, is answered as an invalid challenge (401).
ChallengeToken = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class MfaLoginWithCode(Strict):
    mfa_token: ChallengeToken
    code: TotpCode


class MfaLoginWithRecoveryCode(Strict):
    mfa_token: ChallengeToken
    recovery_code: RecoveryCodeText


class MfaLoginBody(RootModel[MfaLoginWithCode | MfaLoginWithRecoveryCode]):
    """The challenge and either a code from the authenticator app or a recovery code."""


class TotpConfirmBody(Strict):
    code: TotpCode


class TotpRemoveWithCode(Strict):
    password: Password
    code: TotpCode


class TotpRemoveWithRecoveryCode(Strict):
    password: Password
    recovery_code: RecoveryCodeText


class TotpRemoveBody(RootModel[TotpRemoveWithCode | TotpRemoveWithRecoveryCode]):
    """The password and either a code from the authenticator app or a recovery code."""


class TotpEnrolment(BaseModel):
    secret: str
    otpauth_uri: str
    qr_svg: str


class RecoveryCodes(BaseModel):
    recovery_codes: list[str]


class LoginChallenge(BaseModel):
    """The password was right; the account has a second factor: send a code with ``mfa_token`` to
    ``POST /auth/login/mfa`` within ``expires_in`` seconds."""

    mfa_required: Literal[True]
    mfa_token: str
    expires_in: int


# -- sessions and events ----------------------------------------------------------------------------


class SessionOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    client: str
    network: str
    current: bool


class SessionList(BaseModel):
    items: list[SessionOut]


class EventOut(BaseModel):
    type: str
    at: datetime
    client: str | None
    network: str | None
    session_id: uuid.UUID | None


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


class SignInAlertBody(Strict):
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class SignInAlertResult(BaseModel):
    session_ended: bool
    password_reset_mailed: bool


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


class LoginResult(RootModel[TokenPair | LoginChallenge]):
    """Tokens, or, for an account with a second factor, the challenge to answer with a code."""


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
