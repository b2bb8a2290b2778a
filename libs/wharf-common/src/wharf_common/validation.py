"""Request bodies: JSON only (415), well-formed (400), valid against a pydantic model (422)."""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from email_validator import EmailNotValidError, validate_email
from flask import request
from pydantic import AfterValidator, BaseModel, Field, StringConstraints, ValidationError

from wharf_common.problems import Problem

M = TypeVar("M", bound=BaseModel)


def normalise_email(value: str) -> str:
    """A syntactically valid address, lower-cased (no DNS lookup)."""
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


# Field types shared by every request model.
# No control characters (NUL cannot even be stored in Postgres text).
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=NO_CONTROL_CHARACTERS)
]
Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=320), AfterValidator(normalise_email)]


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
        message = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
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
