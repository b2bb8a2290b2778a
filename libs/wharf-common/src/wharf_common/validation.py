"""Request bodies: JSON only (415), well-formed (400), valid against a pydantic model (422)."""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from email_validator import EmailNotValidError, validate_email
from flask import request
from pydantic import AfterValidator, BaseModel, Field, GetJsonSchemaHandler, StringConstraints, ValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from wharf_common.problems import Problem

M = TypeVar("M", bound=BaseModel)


def normalise_email(value: str) -> str:
    """A syntactically valid address, lower-cased (no DNS lookup)."""
    try:
        # strict: at most 64 characters before the @ (RFC 5321), as the schema's format says too.
        return validate_email(value, check_deliverability=False, strict=True).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


class Documented:
    """Keywords added to a type's JSON schema: what a validator function enforces, which pydantic
    cannot derive from it, stated in the OpenAPI document (a unit test holds the two together)."""

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {**handler(schema), **self.keywords}


# Field types shared by every request model. Each one's JSON schema says what it accepts: exactly
# where JSON Schema can say it, and in its description where it cannot.

# No control characters (NUL cannot even be stored in Postgres text).
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"
# What str.strip() removes besides the control characters (refused anyway).
_SPACES = r"\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# No control characters, and one character at least that is not whitespace.
VISIBLE_TEXT = rf"^[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f{_SPACES}][^\x00-\x1f\x7f]*$"
# Why a value does not match a shared pattern, in words (pydantic would quote the pattern).
PATTERN_MESSAGES = {
    NO_CONTROL_CHARACTERS: "must not contain control characters",
    VISIBLE_TEXT: "must contain a character that is not whitespace, and no control characters",
}


def trimmed_text(max_length: int) -> Any:
    """Free text: at most ``max_length`` characters as sent, not blank, no control characters;
    kept without its surrounding whitespace."""
    return Annotated[
        str,
        StringConstraints(min_length=1, max_length=max_length, pattern=VISIBLE_TEXT),
        AfterValidator(str.strip),
        Documented(description="Surrounding whitespace is removed."),
    ]


Name = trimmed_text(100)

# email-validator's rules (strict, no DNS lookup) as a JSON Schema pattern, exact for ASCII
# addresses without a Punycode label (a unit test compares the two). Before the @: dot-atom text
# (RFC 5322; no quoting; 64 characters at most), non-ASCII characters allowed (RFC 6531). After it: labels of letters,
# digits and inner hyphens (at most 63 each; "ab--" only as "xn--"), two at least, the last ending
# in a letter and not a special-use name (RFC 6761, 6762, 7686; "arpa"). UTS 46 takes the
# ideographic and full-width full stops for dots too.
EMAIL_MAX_LENGTH = 254  # email-validator's limit, in UTF-8 bytes (a character is one at least)
EMAIL_MAX_LOCAL_LENGTH = 64  # characters before the @ (its strict mode)
_SPECIAL_USE_DOMAINS = ("arpa", "invalid", "local", "localhost", "onion", "test")
_ATOM = r'[^\x00-\x20\x7f-\x9f"(),.:;<>@\[\\\]]+'
_LABEL_END = r"[^\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x9f]"  # a letter, a digit or a non-ASCII character
_LABEL_INNER = r"[^\x00-\x2c\x2e\x2f\x3a-\x40\x5b-\x60\x7b-\x9f]"  # the same, or a hyphen
_TOP_LEVEL_END = r"[^\x00-\x40\x5b-\x60\x7b-\x9f]"  # a letter or a non-ASCII character
_NOT_PUNYCODE_LIKE = r"(?!(?![Xx][Nn])..--)"
_DOT = r"[.\u3002\uff0e\uff61]"
_SPECIAL_USE = "|".join("".join(f"[{c.upper()}{c}]" for c in name) for name in _SPECIAL_USE_DOMAINS)
EMAIL_PATTERN = (
    rf"^(?=[^@]{{1,{EMAIL_MAX_LOCAL_LENGTH}}}@){_ATOM}(?:\.{_ATOM})*@"
    rf"(?:{_NOT_PUNYCODE_LIKE}{_LABEL_END}(?:{_LABEL_INNER}{{0,61}}{_LABEL_END})?{_DOT})+"
    rf"(?!(?:{_SPECIAL_USE})$){_NOT_PUNYCODE_LIKE}(?:{_LABEL_END}{_LABEL_INNER}{{0,61}})?{_TOP_LEVEL_END}$"
)
EMAIL_RULES = (
    "An email address as the service validates it (email-validator, no DNS lookup), stored "
    "lower-cased: dot-atom text of at most 64 characters before the @ (RFC 5322: no quoting, no "
    "surrounding whitespace), and "
    "after it a domain name (no IP literal) of two labels at least, the last ending in a letter and "
    f"not {', '.join(_SPECIAL_USE_DOMAINS)}. The pattern says this exactly for ASCII addresses "
    "without a Punycode (xn--) label. Internationalized addresses (RFC 6531) are accepted under "
    "rules no pattern can state, and refused with 422 when they break one: before the @, letters, "
    "marks (not first), numbers, punctuation and symbols only; after it, a valid IDNA 2008 domain "
    "name (Punycode labels included), each label at most 63 bytes once encoded; the whole address "
    f"at most {EMAIL_MAX_LENGTH} bytes in UTF-8."
)
Email = Annotated[
    str,
    StringConstraints(max_length=EMAIL_MAX_LENGTH),
    AfterValidator(normalise_email),
    Documented(format="idn-email", pattern=EMAIL_PATTERN, description=EMAIL_RULES),
]


def omitted() -> Any:
    """The default of a field that may be left out but is never ``null`` (a merge patch's member):
    unset when absent, and its JSON schema shows neither ``null`` nor a default, so the document
    says exactly what is accepted. Any type goes with it, constrained or annotated (``Field``
    constraints, ``json_schema_extra``, validators): it adds nothing to the field but a default
    factory, whose value pydantic never writes into a schema."""
    return Field(default_factory=_absent)


def _absent() -> None:
    return None


def field_errors(error: ValidationError) -> list[dict[str, str]]:
    """Every failing field with a human-readable reason, e.g. ``{"field": "name", "message": ...}``."""
    errors = []
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in item["loc"]) or "body"
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "string_pattern_mismatch":
            message = PATTERN_MESSAGES.get(item.get("ctx", {}).get("pattern", ""), item["msg"])
        else:
            message = item["msg"]
        errors.append({"field": field, "message": message})
    return errors


def invalid(errors: list[dict[str, str]]) -> Problem:
    fields = ", ".join(sorted({e["field"] for e in errors}))
    return Problem(
        422, f"Invalid fields: {fields}.", slug="validation-error", title="Unprocessable Content", errors=errors
    )


def invalid_field(field: str, message: str) -> Problem:
    """A 422 for one failing field (a query parameter or a header, say)."""
    return invalid([{"field": field, "message": message}])


JSON = ("application/json",)


def unsupported_media_type(accepted: tuple[str, ...]) -> Problem:
    """415 naming the media types this operation takes (its OpenAPI requestBody lists the same)."""
    names = " or ".join(accepted)
    headers = {"Accept-Patch": ", ".join(accepted)} if request.method == "PATCH" else {}  # RFC 5789 section 3.1
    return Problem(415, f"The request body must be {names}.", slug="unsupported-media-type", headers=headers)


def json_body(accepted: tuple[str, ...] = JSON) -> Any:
    """The parsed JSON body. Only the ``accepted`` media types: another ``+json`` type is another
    format (``application/json-patch+json`` is a list of operations, not a document), so 415."""
    if request.mimetype not in accepted:
        raise unsupported_media_type(accepted)
    raw = request.get_data(cache=True)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise Problem(400, "The request body is not valid JSON.", slug="malformed-json", title="Bad Request") from None


def validate(model: type[M], data: Any, extra_errors: list[dict[str, str]] | None = None) -> M:
    """``data`` as ``model``, or a 422 listing every failing field (``extra_errors`` included)."""
    errors = list(extra_errors or [])
    try:
        result = model.model_validate(data)
    except ValidationError as error:
        errors.extend(field_errors(error))
    if errors:
        raise invalid(errors)
    return result


def json_object() -> dict[str, Any]:
    """The request body as a JSON object (415 not JSON, 400 malformed or not an object)."""
    data = json_body()
    if not isinstance(data, dict):
        raise Problem(400, "The request body must be a JSON object.", slug="malformed-json", title="Bad Request")
    return data


def parse_body(model: type[M]) -> M:
    return validate(model, json_object())
