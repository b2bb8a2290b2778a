"""OpenAPI 3.1 documents generated from the code: the Flask routes, their pydantic models, and an
``@operation`` decorator on each documented view that declares its responses.

The document is the contract a generated client is built from, so it declares every status the
service or the edge (nginx) can really send for an operation: the operation's own, 401 when it
requires a token, 415/422 when it takes a body, and the answers any request can get (a malformed
request, an unknown path or method, the edge's limits and failures), declared once as shared
``components/responses``. Response headers are declared once in ``components/headers``, typed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask, request
from pydantic import BaseModel, ConfigDict

from wharf_common.problems import PROBLEM_MEDIA_TYPE
from wharf_common.validation import omitted

F = TypeVar("F", bound=Callable[..., Any])
REF = "#/components/schemas/{model}"


class FieldError(BaseModel):
    field: str
    message: str


class ProblemDocument(BaseModel):
    """RFC 9457 problem details; ``type`` is a stable URI clients can switch on."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    # Present or absent, never null (exactly what the services and the edge send).
    request_id: str = omitted()
    errors: list[FieldError] = omitted()


@dataclass(frozen=True)
class Response:
    description: str
    model: type[BaseModel] | None = None  # a JSON body; None with problem=False means no body
    problem: bool = False
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Parameter:
    name: str
    location: str  # "query" or "header"
    schema: Mapping[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: Mapping[int, Response]
    description: str = ""
    body: type[BaseModel] | None = None
    body_media_types: tuple[str, ...] = ("application/json",)
    parameters: tuple[Parameter, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass
class _Components:
    schemas: dict[str, Any] = field(default_factory=dict)
    responses: dict[str, Any] = field(default_factory=dict)

    def ref(self, model: type[BaseModel], mode: str) -> dict[str, str]:
        """A reference to ``model``'s schema, generated the first time it is referenced."""
        if model.__name__ not in self.schemas:
            schema = model.model_json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
            for name, definition in schema.pop("$defs", {}).items():
                self.schemas.setdefault(name, definition)
            self.schemas[model.__name__] = schema
        return {"$ref": REF.format(model=model.__name__)}


# Response headers, declared once (components/headers) and referenced by the responses that send them.
HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id (the client's own when well-formed), as logged and in problem documents",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{8,128}$"},
    },
    "Location": {"description": "URL of the created resource", "schema": {"type": "string", "format": "uri-reference"}},
    "ETag": {
        "description": "Strong entity tag of the representation",
        "schema": {"type": "string", "pattern": '^"[^"]*"$'},
    },
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}},
    "WWW-Authenticate": {
        "description": "Bearer challenge (RFC 6750)",
        "schema": {"type": "string", "pattern": "^Bearer "},
    },
    "X-Cache": {"description": "HIT when served from the cache", "schema": {"type": "string", "enum": ["HIT", "MISS"]}},
    "Idempotent-Replayed": {
        "description": "true on a replayed response",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Cache-Control": {"description": "Caching directives", "schema": {"type": "string"}},
    "Allow": {"description": "The methods this path serves", "schema": {"type": "string"}},
    "Accept-Patch": {"description": "The media types PATCH accepts (RFC 5789)", "schema": {"type": "string"}},
}
HEADER_REF = "#/components/headers/{name}"
RESPONSE_REF = "#/components/responses/{name}"

# Answers any request can get, from the service or from the edge in front of it: declared once as
# shared responses, and referenced by every operation (an operation's own declaration wins).
SHARED: dict[int, tuple[str, Response]] = {
    400: (
        "BadRequest",
        Response(
            "Malformed request: unparsable, or a header sent twice that may appear once (Authorization)", problem=True
        ),
    ),
    404: (
        "NotFound",
        Response("No route matches this path (or, with a path parameter, nothing has this id)", problem=True),
    ),
    405: ("MethodNotAllowed", Response("This path does not serve this method", problem=True, headers=("Allow",))),
    413: ("ContentTooLarge", Response("Request body too large (the edge's or the service's limit)", problem=True)),
    414: ("UriTooLong", Response("Request line too long (the edge)", problem=True)),
    429: (
        "TooManyRequests",
        Response(
            "Too many requests or connections from this address; retry later", problem=True, headers=("Retry-After",)
        ),
    ),
    431: (
        "HeaderFieldsTooLarge",
        Response("A request header or the headers as a whole are too large (the edge)", problem=True),
    ),
    500: ("InternalError", Response("An unexpected error (nothing internal is disclosed)", problem=True)),
    502: ("BadGateway", Response("The service did not answer the edge", problem=True)),
    503: (
        "Unavailable",
        Response(
            "A dependency is unavailable, or the edge is in maintenance; retry later",
            problem=True,
            headers=("Retry-After",),
        ),
    ),
    504: ("GatewayTimeout", Response("The service did not answer the edge in time", problem=True)),
}


def operation(
    summary: str,
    *,
    responses: Mapping[int, Response | str],
    description: str = "",
    body: type[BaseModel] | None = None,
    body_media_types: tuple[str, ...] = ("application/json",),
    parameters: tuple[Parameter, ...] = (),
    tags: tuple[str, ...] = (),
    bearer: bool = False,
) -> Callable[[F], F]:
    """Document a view. A ``str`` response is a problem+json response with that description.
    ``bearer`` marks a view that checks the token itself (``@require_auth`` views are detected)."""
    normalised = {
        status: Response(spec, problem=True) if isinstance(spec, str) else spec for status, spec in responses.items()
    }

    def decorate(view: F) -> F:
        view.wharf_operation = Operation(summary, normalised, description, body, body_media_types, parameters, tags)  # type: ignore[attr-defined]
        if bearer:
            view.wharf_requires_auth = True  # type: ignore[attr-defined]
        return view

    return decorate


def _implied_responses(op: Operation, requires_auth: bool) -> dict[int, Response]:
    implied = {}
    if requires_auth:
        implied[401] = Response(
            "Missing, invalid, expired or revoked access token", problem=True, headers=("WWW-Authenticate",)
        )
    if op.body is not None:
        implied[400] = Response("Malformed JSON, or a malformed request", problem=True)
        accepted = " or ".join(op.body_media_types)
        headers = ("Accept-Patch",) if op.body_media_types != ("application/json",) else ()
        implied[415] = Response(
            f"The body is not {accepted} (the detail names the accepted types)", problem=True, headers=headers
        )
        implied[422] = Response(
            "Invalid fields, each listed in `errors`: a value its schema refuses, or one that breaks a rule "
            "its field's description states beyond the schema",
            problem=True,
        )
    return implied


def _headers(names: tuple[str, ...]) -> dict[str, Any]:
    return {name: {"$ref": HEADER_REF.format(name=name)} for name in ("X-Request-ID", *names)}


def _response(spec: Response, components: _Components) -> dict[str, Any]:
    out: dict[str, Any] = {"description": spec.description, "headers": _headers(spec.headers)}
    if spec.problem:
        out["content"] = {PROBLEM_MEDIA_TYPE: {"schema": components.ref(ProblemDocument, "serialization")}}
    elif spec.model is not None:
        out["content"] = {"application/json": {"schema": components.ref(spec.model, "serialization")}}
    return out


def _shared(status: int, components: _Components) -> dict[str, str]:
    name, spec = SHARED[status]
    if name not in components.responses:
        components.responses[name] = _response(spec, components)
    return {"$ref": RESPONSE_REF.format(name=name)}


_PATH_PARAMETER = re.compile(r"<(?:(\w+):)?(\w+)>")


def _path_and_parameters(rule: str) -> tuple[str, list[dict[str, Any]]]:
    parameters = []
    for converter, name in _PATH_PARAMETER.findall(rule):
        if converter == "uuid":  # anything else in that place matches no route: 404
            schema = {"type": "string", "format": "uuid"}
            description = "A UUID; any other value is answered 404"
        else:
            schema, description = {"type": "string"}, ""
        parameter = {"name": name, "in": "path", "required": True, "schema": schema}
        parameters.append({**parameter, "description": description} if description else parameter)
    return _PATH_PARAMETER.sub(r"{\2}", rule), parameters


def _parameter(p: Parameter, required: frozenset[str]) -> dict[str, Any]:
    return {
        "name": p.name,
        "in": p.location,
        "required": p.required or p.name in required,
        "schema": dict(p.schema),
        "description": p.description,
    }


def _operation(
    op: Operation,
    requires_auth: bool,
    path_parameters: list[dict[str, Any]],
    c: _Components,
    required: frozenset[str],
) -> Any:
    responses = {**_implied_responses(op, requires_auth), **op.responses}
    documented = {str(status): _response(responses[status], c) for status in responses}
    shared = {str(status): _shared(status, c) for status in SHARED if status not in responses}
    out: dict[str, Any] = {
        "summary": op.summary,
        "tags": list(op.tags),
        "parameters": path_parameters + [_parameter(p, required) for p in op.parameters],
        "responses": dict(sorted({**documented, **shared}.items())),
    }
    if op.description:
        out["description"] = op.description
    if op.body is not None:
        schema = c.ref(op.body, "validation")
        out["requestBody"] = {"required": True, "content": {media: {"schema": schema} for media in op.body_media_types}}
    if requires_auth:
        out["security"] = [{"bearerAuth": []}]
    return out


def build(
    app: Flask,
    *,
    title: str,
    version: str,
    description: str,
    public_url: str | None = None,
    required_parameters: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The OpenAPI document of every ``@operation`` view of ``app``. ``public_url`` (the edge's
    URL, e.g. ``https://wharf.example.com``) adds an absolute server entry; ``required_parameters``
    names optional parameters this deployment requires (``If-Match``, say)."""
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        op: Operation | None = getattr(view, "wharf_operation", None)
        if op is None:
            continue
        path, path_parameters = _path_and_parameters(rule.rule)
        requires_auth = bool(getattr(view, "wharf_requires_auth", False))
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(
                op, requires_auth, path_parameters, components, required_parameters
            )
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "servers": servers(public_url),
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "responses": dict(sorted(components.responses.items())),
            "headers": dict(HEADERS),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def servers(public_url: str | None) -> list[dict[str, str]]:
    """Where the operations are: the public prefix the edge serves this service under (``/api``,
    ``/auth``; relative to the document's own URL, as OpenAPI resolves it), and, when the
    deployment names its public URL (``EDGE_PUBLIC_URL``), that absolute URL first."""
    prefix = (request.script_root if request else "") or "/"
    entries = []
    if public_url:
        entries.append({"url": public_url.rstrip("/") + prefix.rstrip("/"), "description": "This deployment"})
    entries.append({"url": prefix, "description": "Relative to the URL this document was fetched from"})
    return entries
