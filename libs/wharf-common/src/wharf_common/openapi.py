"""OpenAPI 3.1 documents generated from the code: the Flask routes, their pydantic models, and an
``@operation`` decorator on each documented view that declares its responses.

Responses every route can give are added for it: 401 when it requires a token, 400/413/415/422
when it takes a body, and 429 (the edge's rate limits) and 503 (a dependency is down) everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask, request
from pydantic import BaseModel, ConfigDict

from wharf_common.problems import PROBLEM_MEDIA_TYPE

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
    request_id: str | None = None
    errors: list[FieldError] | None = None


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
    body: type[BaseModel] | None = None
    body_media_types: tuple[str, ...] = ("application/json",)
    parameters: tuple[Parameter, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass
class _Components:
    schemas: dict[str, Any] = field(default_factory=dict)

    def ref(self, model: type[BaseModel], mode: str) -> dict[str, str]:
        """A reference to ``model``'s schema, generated the first time it is referenced."""
        if model.__name__ not in self.schemas:
            schema = model.model_json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
            for name, definition in schema.pop("$defs", {}).items():
                self.schemas.setdefault(name, definition)
            self.schemas[model.__name__] = schema
        return {"$ref": REF.format(model=model.__name__)}


# Header documentation shared by every operation that sends them.
HEADERS: dict[str, dict[str, Any]] = {
    "Location": {"description": "URL of the created resource", "schema": {"type": "string"}},
    "ETag": {"description": "Strong entity tag of the representation", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "string"}},
    "WWW-Authenticate": {"description": "Bearer challenge (RFC 6750)", "schema": {"type": "string"}},
    "X-Cache": {"description": "HIT when served from the cache", "schema": {"type": "string", "enum": ["HIT", "MISS"]}},
    "Idempotent-Replayed": {"description": "true on a replayed response", "schema": {"type": "string"}},
    "Cache-Control": {"description": "Caching directives", "schema": {"type": "string"}},
}


def operation(
    summary: str,
    *,
    responses: Mapping[int, Response | str],
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
        view.wharf_operation = Operation(summary, normalised, body, body_media_types, parameters, tags)  # type: ignore[attr-defined]
        if bearer:
            view.wharf_requires_auth = True  # type: ignore[attr-defined]
        return view

    return decorate


def _implied_responses(op: Operation, requires_auth: bool) -> dict[int, Response]:
    implied = {
        # The edge (nginx) limits every route by client address, before the service sees it.
        429: Response("Too many requests from this address; retry later", problem=True, headers=("Retry-After",)),
        503: Response("A dependency is unavailable; retry later", problem=True, headers=("Retry-After",)),
    }
    if requires_auth:
        implied[401] = Response(
            "Missing, invalid, expired or revoked access token", problem=True, headers=("WWW-Authenticate",)
        )
    if op.body is not None:
        implied[400] = Response("Malformed JSON", problem=True)
        implied[413] = Response("Request body too large", problem=True)
        implied[415] = Response("The body is not JSON", problem=True)
        implied[422] = Response("Invalid fields, each listed in `errors`", problem=True)
    return implied


def _response(spec: Response, components: _Components) -> dict[str, Any]:
    out: dict[str, Any] = {"description": spec.description}
    if spec.problem:
        out["content"] = {PROBLEM_MEDIA_TYPE: {"schema": components.ref(ProblemDocument, "serialization")}}
    elif spec.model is not None:
        out["content"] = {"application/json": {"schema": components.ref(spec.model, "serialization")}}
    if spec.headers:
        out["headers"] = {name: HEADERS[name] for name in spec.headers}
    return out


_PATH_PARAMETER = re.compile(r"<(?:(\w+):)?(\w+)>")


def _path_and_parameters(rule: str) -> tuple[str, list[dict[str, Any]]]:
    parameters = []
    for converter, name in _PATH_PARAMETER.findall(rule):
        schema = {"type": "string", "format": "uuid"} if converter == "uuid" else {"type": "string"}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    return _PATH_PARAMETER.sub(r"{\2}", rule), parameters


def _parameter(p: Parameter) -> dict[str, Any]:
    return {
        "name": p.name,
        "in": p.location,
        "required": p.required,
        "schema": dict(p.schema),
        "description": p.description,
    }


def _operation(op: Operation, requires_auth: bool, path_parameters: list[dict[str, Any]], c: _Components) -> Any:
    responses = {**_implied_responses(op, requires_auth), **op.responses}
    out: dict[str, Any] = {
        "summary": op.summary,
        "tags": list(op.tags),
        "parameters": path_parameters + [_parameter(p) for p in op.parameters],
        "responses": {str(status): _response(responses[status], c) for status in sorted(responses)},
    }
    if op.body is not None:
        schema = c.ref(op.body, "validation")
        out["requestBody"] = {"required": True, "content": {media: {"schema": schema} for media in op.body_media_types}}
    if requires_auth:
        out["security"] = [{"bearerAuth": []}]
    return out


def build(app: Flask, *, title: str, version: str, description: str) -> dict[str, Any]:
    """The OpenAPI document of every ``@operation`` view of ``app``."""
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
            paths.setdefault(path, {})[method.lower()] = _operation(op, requires_auth, path_parameters, components)
    prefix = request.script_root if request else ""
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "servers": [{"url": prefix or "/"}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
