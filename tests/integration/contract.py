"""What the OpenAPI documents promise about requests, as schemathesis checks it (issue 32).

A request the document allows is accepted (``positive_data_acceptance``: a 2xx), and one it
refuses is refused (``negative_data_rejection``: a 4xx other than 429). Some requests the document
allows are still refused, for a reason no schema can state: an unknown token, an address already
registered, a wrong password. Each such answer is declared in the document (the operation's
response, or the description of the field whose rule it is) and listed in ``DECLARED`` with its
reason; ``refused_for_a_declared_reason`` holds a refusal of a schema-valid request to the reason
declared for its status. Nothing else is excluded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemathesis.config import SchemathesisConfig

PROBLEMS = "https://wharf.dev/problems/"
# Every 4xx but 429 rejects invalid data: a rate limit's 429 would mean the operation was never reached.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "412", "413", "414", "415", "422", "428", "431"]

Applies = Callable[[dict[str, Any], Any], bool]  # (problem document, schemathesis case)


def _always(_problem: dict[str, Any], _case: Any) -> bool:
    return True


@dataclass(frozen=True)
class Declared:
    """A status a schema-valid request may get, and why (``types``: the problem types it is
    answered with; none for an answer without a problem document)."""

    status: int
    reason: str
    types: tuple[str, ...] = ()
    applies: Applies = _always

    def explains(self, problem: dict[str, Any] | None, case: Any) -> bool:
        if not self.types:
            return problem is None
        return (
            problem is not None
            and problem.get("type") in {PROBLEMS + t for t in self.types}
            and self.applies(problem, case)
        )


def _only_fields(fields: set[str], message: Callable[[str, Any], bool]) -> Applies:
    """Every listed error is on one of ``fields``, and ``message(message, the field's value)`` holds."""

    def applies(problem: dict[str, Any], case: Any) -> bool:
        errors = problem.get("errors") or []
        body = case.body if isinstance(case.body, dict) else {}
        return bool(errors) and all(
            e["field"] in fields and message(e["message"], body.get(e["field"])) for e in errors
        )

    return applies


def _detail(start: str) -> Applies:
    return lambda problem, _case: str(problem.get("detail", "")).startswith(start)


def _internationalized(_message: str, value: Any) -> bool:
    """The rules the email pattern cannot state: non-ASCII characters, Punycode labels."""
    return isinstance(value, str) and (not value.isascii() or "xn--" in value.lower())


PASSWORD_POLICY = (
    "the password policy refuses the new password (common, repetitive, sequential or built from the email)"
)
INTERNATIONALIZED_EMAIL = "an internationalized email address breaks a rule of its field's description"
NO_SUCH_USER = Declared(404, "no user has this id", ("not-found",))
NOT_THE_OWNER = Declared(403, "only the user's owner or an admin may change it", ("forbidden",))
STALE_ETAG = Declared(412, "If-Match does not name the current ETag", ("precondition-failed",))
MAILED_TOKEN = Declared(
    400,
    "no mailed token is this one, or it is used, superseded or expired",
    ("token-invalid", "token-used", "token-superseded", "token-expired"),
)
ACCOUNT_LOCKED = Declared(
    429,
    "the account's sign-in is locked after failed attempts",
    ("too-many-requests",),
    _detail("Too many failed sign-in attempts"),
)
MAIL_THROTTLED = Declared(
    429, "too many mails asked for this address", ("too-many-requests",), _detail("Too many requests for a mail")
)


def _bad_email(field: str = "email") -> Declared:
    return Declared(422, INTERNATIONALIZED_EMAIL, ("validation-error",), _only_fields({field}, _internationalized))


def _policy(field: str) -> Declared:
    return Declared(
        422, PASSWORD_POLICY, ("validation-error",), _only_fields({field}, lambda m, _v: m.startswith("Password "))
    )


# Per document, per operation: what a schema-valid request may get besides a 2xx, and why.
DECLARED: dict[str, dict[str, tuple[Declared, ...]]] = {
    "api": {
        "GET /users/{user_id}": (
            NO_SUCH_USER,
            Declared(304, "If-None-Match names the current ETag"),
        ),
        "PATCH /users/{user_id}": (
            NO_SUCH_USER,
            NOT_THE_OWNER,
            STALE_ETAG,
            Declared(409, "another user has this email", ("conflict",)),
            _bad_email(),
        ),
        "DELETE /users/{user_id}": (NO_SUCH_USER, NOT_THE_OWNER, STALE_ETAG),
        "POST /users": (
            Declared(409, "another user has this email", ("conflict",)),
            Declared(
                422,
                "the Idempotency-Key was used before with another body",
                ("validation-error",),
                _only_fields({"Idempotency-Key"}, lambda m, _v: m.startswith("was already used")),
            ),
            _bad_email(),
        ),
    },
    "auth": {
        "POST /register": (
            Declared(409, "an account has this email", ("conflict",)),
            _policy("password"),
            _bad_email(),
        ),
        "POST /login": (
            Declared(401, "no account has this email and password", ("unauthorized",)),
            ACCOUNT_LOCKED,
        ),
        "POST /login/mfa": (
            Declared(401, "the sign-in challenge is unknown, used or expired, or the code is wrong", ("unauthorized",)),
            ACCOUNT_LOCKED,
        ),
        "POST /mfa/totp": (Declared(409, "a second factor is already active", ("mfa-already-enabled",)),),
        "POST /mfa/totp/confirm": (
            Declared(403, "the code is not the authenticator's", ("wrong-code",)),
            Declared(409, "no enrolment is pending", ("mfa-not-pending",)),
            ACCOUNT_LOCKED,
        ),
        "DELETE /mfa/totp": (
            Declared(403, "the password or the code is wrong", ("wrong-credentials",)),
            Declared(
                409,
                "no second factor is active, or an admin must keep it",
                ("mfa-not-enabled", "mfa-required"),
            ),
            ACCOUNT_LOCKED,
        ),
        "DELETE /sessions/{session_id}": (
            Declared(404, "no active session of the caller has this id", ("not-found",)),
        ),
        "POST /sign-in-alert": (MAILED_TOKEN,),
        "POST /refresh": (Declared(401, "no refresh token is this one, or it is used or expired", ("unauthorized",)),),
        "POST /password": (
            Declared(403, "the current password is wrong", ("wrong-password",)),
            _policy("new_password"),
        ),
        "POST /password-reset": (MAIL_THROTTLED, _bad_email()),
        "POST /verify-email/resend": (MAIL_THROTTLED, _bad_email()),
        "POST /password-reset/confirm": (MAILED_TOKEN,),
        "POST /verify-email": (MAILED_TOKEN,),
    },
}


def config(service: str) -> SchemathesisConfig:
    """schemathesis' configuration for ``service``'s document: a schema-valid request must get a
    2xx, or one of the statuses declared for its operation; an invalid one a rejection."""
    operations = []
    for name, declared in DECLARED[service].items():
        statuses = ["2xx", *sorted({str(d.status) for d in declared})]
        operations.append(
            {"include-name": name, "checks": {"positive_data_acceptance": {"expected-statuses": statuses}}}
        )
    return SchemathesisConfig.from_dict(
        {
            # The tests send their own credentials: no Authorization header is generated (or left out).
            "generation": {"with-security-parameters": False},
            "checks": {
                "positive_data_acceptance": {"expected-statuses": ["2xx"]},
                "negative_data_rejection": {"expected-statuses": REJECTIONS},
            },
            "operations": operations,
        }
    )


def refused_for_a_declared_reason(service: str) -> Callable[[Any, Any, Any], None]:
    """A check: a schema-valid request answered other than 2xx got that status for the reason
    declared for it (``positive_data_acceptance`` lets a declared status through; this holds it to
    what it must mean)."""
    declared_here = DECLARED[service]

    def declared_reason(_ctx: Any, response: Any, case: Any) -> None:
        if case.meta is None or not case.meta.generation.mode.is_positive or 200 <= response.status_code < 300:
            return
        declared = [d for d in declared_here.get(case.operation.label, ()) if d.status == response.status_code]
        if not declared:
            return  # not a declared status: positive_data_acceptance reports it
        is_problem = response.headers.get("content-type", [""])[0].startswith("application/problem+json")
        problem = response.json() if is_problem else None
        if not any(d.explains(problem, case) for d in declared):
            reasons = "; or ".join(d.reason for d in declared)
            raise AssertionError(f"{response.status_code} for a schema-valid request, not because {reasons}: {problem}")

    return declared_reason
