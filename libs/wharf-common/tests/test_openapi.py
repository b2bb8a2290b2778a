"""The OpenAPI builder on a small Flask app of its own (no database): what every document says."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import pytest
from flask import Flask, jsonify
from openapi_spec_validator import validate
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from wharf_common import openapi
from wharf_common.openapi import Parameter, operation
from wharf_common.openapi import Response as Doc
from wharf_common.validation import omitted

IF_MATCH = Parameter("If-Match", "header", {"type": "string"}, "ETag")


class ThingPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = omitted()


class ThingOut(BaseModel):
    id: uuid.UUID
    name: str
    note: str | None  # really null at times: stays nullable


def _app() -> Flask:
    app = Flask(__name__)

    @app.patch("/things/<uuid:thing_id>")
    @operation(
        "Change a thing",
        description="Longer words.",
        body=ThingPatch,
        body_media_types=("application/merge-patch+json",),
        parameters=(IF_MATCH,),
        responses={200: Doc("Changed", ThingOut, headers=("ETag",)), 404: "No such thing"},
    )
    def patch_thing(thing_id: uuid.UUID) -> Any:
        return jsonify({})

    @app.get("/things")
    @operation("List things", responses={200: Doc("Things", ThingOut, headers=("X-Cache",))}, bearer=True)
    def list_things() -> Any:
        return jsonify([])

    return app


def _document(**options: Any) -> dict[str, Any]:
    app = _app()
    with app.test_request_context("/openapi.json", base_url="http://localhost/svc/"):  # as behind the edge
        document = openapi.build(app, title="t", version="1", description="d", **options)
    validate(document)
    return json.loads(json.dumps(document))  # as a client receives it


def test_every_operation_declares_the_edges_answers_once_as_shared_responses() -> None:
    document = _document()
    shared = document["components"]["responses"]
    for item in document["paths"].values():
        for op in item.values():
            for status, (name, _spec) in openapi.SHARED.items():
                declared = op["responses"][str(status)]
                # The operation's own declaration (404 "No such thing", 400 malformed JSON) wins.
                assert declared == {"$ref": f"#/components/responses/{name}"} or "$ref" not in declared
                assert name in shared or "$ref" not in declared
    patch = document["paths"]["/things/{thing_id}"]["patch"]["responses"]
    assert patch["404"]["description"] == "No such thing"
    assert patch["502"] == {"$ref": "#/components/responses/BadGateway"}
    assert set(patch) >= {"400", "404", "405", "413", "414", "415", "422", "429", "431", "500", "502", "503", "504"}
    listing = document["paths"]["/things"]["get"]["responses"]
    assert "401" in listing
    assert "415" not in listing  # no body, no media type to refuse


def test_headers_are_declared_once_and_typed() -> None:
    document = _document()
    headers = document["components"]["headers"]
    assert headers["Retry-After"]["schema"] == {"type": "integer", "minimum": 0}
    assert headers["X-Request-ID"]["required"] is True
    changed = document["paths"]["/things/{thing_id}"]["patch"]["responses"]["200"]["headers"]
    assert changed == {
        "X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"},
        "ETag": {"$ref": "#/components/headers/ETag"},
    }
    refused = document["paths"]["/things/{thing_id}"]["patch"]["responses"]["415"]
    assert "application/merge-patch+json" in refused["description"]
    assert "Accept-Patch" in refused["headers"]
    for response in document["components"]["responses"].values():
        assert "X-Request-ID" in response["headers"]


def test_uuid_path_parameters_and_descriptions() -> None:
    op = _document()["paths"]["/things/{thing_id}"]["patch"]
    (thing_id,) = [p for p in op["parameters"] if p["in"] == "path"]
    assert thing_id["schema"] == {"type": "string", "format": "uuid"}
    assert op["description"] == "Longer words."


def test_omitted_fields_are_optional_and_never_null_while_nullable_ones_stay_nullable() -> None:
    schemas = _document()["components"]["schemas"]
    assert schemas["ThingPatch"]["properties"]["name"] == {"title": "Name", "type": "string"}
    assert "required" not in schemas["ThingPatch"]
    assert {"type": "null"} in schemas["ThingOut"]["properties"]["note"]["anyOf"]
    problem = schemas["ProblemDocument"]
    assert problem["properties"]["request_id"] == {"title": "Request Id", "type": "string"}
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    # The model itself: absent stays unset, null is refused.
    assert ThingPatch.model_validate({}).model_dump(exclude_unset=True) == {}
    with pytest.raises(ValueError, match="string"):
        ThingPatch.model_validate({"name": None})


# Field types as a resource declares them: constrained, annotated with schema extras (a dict or a
# callable), validated after parsing. omitted() must keep each one's schema and add no default.
Code = Annotated[str, Field(min_length=2, max_length=8, pattern="^[a-z]+$")]
Tagged = Annotated[str, Field(json_schema_extra={"examples": ["blue"]})]
Marked = Annotated[int, Field(ge=0, json_schema_extra=lambda schema: schema.update({"x-unit": "s"}))]
Lowered = Annotated[str, StringConstraints(strip_whitespace=True, max_length=20), AfterValidator(str.lower)]


class AnnotatedPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    code: Code = omitted()
    tag: Tagged = omitted()
    seconds: Marked = omitted()
    name: Lowered = omitted()


def test_omitted_goes_with_constrained_and_annotated_types() -> None:
    """No warning (the suite turns warnings into errors), the type's own schema untouched, no
    default and nothing required; absent members stay unset, present ones are validated."""
    properties = AnnotatedPatch.model_json_schema()["properties"]
    assert properties == {
        "code": {"maxLength": 8, "minLength": 2, "pattern": "^[a-z]+$", "title": "Code", "type": "string"},
        "tag": {"examples": ["blue"], "title": "Tag", "type": "string"},
        "seconds": {"minimum": 0, "title": "Seconds", "type": "integer", "x-unit": "s"},
        "name": {"maxLength": 20, "title": "Name", "type": "string"},
    }
    assert "required" not in AnnotatedPatch.model_json_schema()
    assert AnnotatedPatch.model_validate({}).model_dump(exclude_unset=True) == {}
    assert AnnotatedPatch.model_validate({"name": " ADA "}).model_dump(exclude_unset=True) == {"name": "ada"}
    with pytest.raises(ValidationError) as refused:
        AnnotatedPatch.model_validate({"code": "X", "seconds": -1, "tag": None})
    assert {error["loc"][0] for error in refused.value.errors()} == {"code", "seconds", "tag"}


@pytest.mark.parametrize(
    ("public_url", "urls"),
    [(None, ["/svc"]), ("https://wharf.example.com/", ["https://wharf.example.com/svc", "/svc"])],
)
def test_servers_relative_and_the_public_url(public_url: str | None, urls: list[str]) -> None:
    assert [s["url"] for s in _document(public_url=public_url)["servers"]] == urls


def test_a_required_parameter_is_marked_so() -> None:
    def if_match(document: dict[str, Any]) -> dict[str, Any]:
        (found,) = [
            p for p in document["paths"]["/things/{thing_id}"]["patch"]["parameters"] if p["name"] == "If-Match"
        ]
        return found

    assert if_match(_document())["required"] is False
    assert if_match(_document(required_parameters=frozenset({"If-Match"})))["required"] is True
