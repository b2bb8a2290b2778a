"""The toolkit every resource of the api is made with: a :class:`Resource` is a table, its schemas and
its access policy (wharf_api.policy), and the toolkit makes its five routes (list, read, create,
change, delete) with everything they share: ids, JSON answers with ETags, keyset pages, cached reads,
rows locked for a write (with ``If-Match``), JSON merge patches, creates made safe to retry by an
``Idempotency-Key``, the cache invalidation after each write, the OpenAPI description, and the
policy's checks on every one of them.

See docs/adding-a-resource.md (and its example, examples/notes/) for how a resource uses it.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar

from flask import Blueprint, Flask, Response, request, url_for
from pydantic import BaseModel, ConfigDict, Field, create_model
from sqlalchemy import Connection, Row, Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from wharf_api import extensions, idempotency, queries
from wharf_api.documents import etag_of, json_bytes
from wharf_api.policy import Policy, Readers, scope
from wharf_common import extensions as common
from wharf_common import metrics
from wharf_common.authn import Principal, current_principal, require_auth
from wharf_common.db import get_session, write_connection
from wharf_common.openapi import Parameter, operation
from wharf_common.openapi import Response as Doc
from wharf_common.pages import LIST_PARAMETERS, PageRequest, next_cursor, page_request
from wharf_common.problems import Problem
from wharf_common.validation import json_body, omitted, parse_body, validate

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
ToJson = Callable[[Any], dict[str, Any]]

MERGE_PATCH_TYPES = ("application/merge-patch+json", "application/json")
# The columns the toolkit reads and writes itself, besides the resource's own.
MANAGED_COLUMNS = ("id", "owner", "created_at", "updated_at")

IF_NONE_MATCH = Parameter("If-None-Match", "header", {"type": "string"}, "ETag of a cached copy")
IF_MATCH = Parameter(
    "If-Match",
    "header",
    {"type": "string"},
    "Only apply if the resource still has this ETag (required when the server sets REQUIRE_IF_MATCH)",
)
IDEMPOTENCY_KEY = Parameter(
    idempotency.HEADER,
    "header",
    # Printable ASCII, as key_from_request checks it (HTTP drops surrounding spaces before it can).
    {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$",
    },
    "Retries with the same key and body return the first response instead of creating again (24 h)",
)


class Schema(BaseModel):
    """A request body: unknown members are refused, no type is coerced. A resource's create schema
    has ``model_config = ConfigDict(json_schema_extra={"examples": [a create, a change]})``: the
    document shows them, the policy test sends them (the change as a merge patch)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Representation(BaseModel):
    """A row as the api shows it: these members and the resource's own (its ``Out`` schema)."""

    id: uuid.UUID
    created_at: datetime
    updated_at: datetime


def json_response(document: bytes, status: int = 200, *, cache: str | None = None, etag: bool = False) -> Response:
    response = Response(document, status=status, mimetype="application/json")
    if cache:
        response.headers["X-Cache"] = cache
    if etag:
        response.set_etag(etag_of(document))
    return response


# -- pages ---------------------------------------------------------------------------------------


def page_document(rows: Sequence[Row[Any]], page: PageRequest, to_json: ToJson) -> bytes:
    """``{"items": [...], "next_cursor": ...}`` from up to ``limit + 1`` rows in id order."""
    items = rows[: page.limit]
    cursor = next_cursor([row.id for row in rows], page.limit)
    return json_bytes({"items": [to_json(row) for row in items], "next_cursor": cursor})


# -- reads, through the cache ---------------------------------------------------------------------


def _looked_up(kind: str, hit: bool) -> str:
    metrics.CACHE_LOOKUPS.labels(kind, "hit" if hit else "miss").inc()
    return "HIT" if hit else "MISS"


def read_item(
    kind: str,
    key: uuid.UUID,
    load: Callable[[], Row[Any] | None],
    to_json: ToJson,
    not_found: Problem,
    *,
    scope: str,
) -> Response:
    """One item, from the cache or from ``load()`` (then cached), with an ETag; 304 on If-None-Match.
    ``scope`` is who may see it (wharf_api.policy.scope): what ``load`` finds for that reader."""
    cache = extensions.of().cache
    lookup = cache.item(kind, str(key), scope)
    document = lookup.document
    state = _looked_up("item", hit=document is not None)
    if document is None:
        row = load()
        if row is None:
            raise not_found
        document = json_bytes(to_json(row))
        cache.fill(lookup, document)
    response = json_response(document, cache=state, etag=True)
    return response.make_conditional(request) if request.if_none_match else response


def read_page(
    kind: str, scope: str, page: PageRequest, load: Callable[[], Sequence[Row[Any]]], to_json: ToJson
) -> Response:
    """One page of a list; ``scope`` is who may see it (wharf_api.policy.scope)."""
    cache = extensions.of().cache
    lookup = cache.page(kind, scope, f"{page.limit}:{page.cursor or ''}")
    if lookup.document is not None:
        return json_response(lookup.document, cache=_looked_up("page", hit=True))
    document = page_document(load(), page, to_json)
    cache.fill(lookup, document)
    return json_response(document, cache=_looked_up("page", hit=False))


# -- writes -------------------------------------------------------------------------------------


def merge_patch(model: type[M]) -> dict[str, Any]:
    """The changes a JSON merge patch (RFC 7396) asks for, validated by ``model`` (every field
    optional); ``null`` removes a member, and the members of these resources cannot be removed."""
    data = json_body(MERGE_PATCH_TYPES)
    if not isinstance(data, dict):
        raise Problem(400, "A merge patch must be a JSON object.", slug="malformed-json", title="Bad Request")
    nulls = [{"field": name, "message": "may not be null"} for name, value in data.items() if value is None]
    patch = validate(model, {k: v for k, v in data.items() if v is not None}, extra_errors=nulls)
    return patch.model_dump(exclude_unset=True)


def committed(session: Session | Connection, write: Callable[[], T], conflict: Problem | None) -> T:
    """``write()`` in the request's session, then commit. A unique constraint's violation (by the
    statement or at the commit) is ``conflict`` (when given), and nothing is kept."""
    try:
        result = write()
        session.commit()
    except IntegrityError:
        session.rollback()
        if conflict is None:
            raise
        raise conflict from None
    return result


def insert_answered(
    table: Table, values: dict[str, Any], to_json: ToJson, location: Callable[[Row[Any]], str], conflict: Problem | None
) -> tuple[Response, Row[Any] | None]:
    """Insert ``values`` and answer 201 with the document, its ETag and ``location(row)``. With an
    ``Idempotency-Key``, the insert and its answer are recorded in one transaction of the ORM
    session, and a retry gets the recorded answer again (the row is then None: nothing was
    created); without, the insert is a transaction of its own in SQLAlchemy Core. A unique
    constraint's violation is ``conflict``."""
    key = idempotency.key_from_request()
    if key is None:
        connection = write_connection()
        row, document, where = committed(
            connection, lambda: _inserted(connection, table, values, to_json, location), conflict
        )
    else:
        session = get_session()
        owner, request_hash = current_principal().subject, idempotency.fingerprint(request.get_data())
        replay = idempotency.begin(session, owner, key, request_hash)
        if replay is not None:
            return replay, None

        def write() -> tuple[Row[Any], bytes, str]:
            answer = _inserted(session, table, values, to_json, location)
            idempotency.record(session, owner, key, request_hash, 201, answer[1], answer[2])
            return answer

        row, document, where = committed(session, write, conflict)
    response = json_response(document, 201, etag=True)
    response.headers["Location"] = where
    return response, row


def _inserted(
    runner: Session | Connection,
    table: Table,
    values: dict[str, Any],
    to_json: ToJson,
    location: Callable[[Row[Any]], str],
) -> tuple[Row[Any], bytes, str]:
    row = queries.insert(runner, table=table, values=values)
    return row, json_bytes(to_json(row)), location(row)


# -- resources ----------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    return value.isoformat() if isinstance(value, datetime) else value


def _either(words: Sequence[str]) -> str:
    return " or ".join(filter(None, (", ".join(words[:-1]), words[-1])))


def merge_patch_schema(create: type[Schema], item: str) -> type[BaseModel]:
    """The JSON merge patch (RFC 7396) of what ``create`` creates: each of its members, with its type,
    constraints, validators and description, may be left out and is never ``null`` (``omitted()``).
    Its example is the create schema's second one (a change of every member), else its first."""
    members: dict[str, Any] = {}
    for name, field in create.model_fields.items():
        constrained = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        documented = Field(description=field.description, json_schema_extra=field.json_schema_extra)
        members[name] = (Annotated[constrained, documented], omitted())
    examples = _examples(create)
    config = ConfigDict(**Schema.model_config, json_schema_extra={"examples": examples[1:] or examples})
    return create_model(
        f"{create.__name__.removesuffix('Create')}Patch",
        __config__=config,
        __doc__=f"JSON merge patch (RFC 7396) of a {item}: the members present are replaced; null is refused.",
        **members,
    )


class Resource:
    """``table`` served under ``/<name>``, one row at ``/<name>/<uuid:<item>_id>``, as ``policy`` allows.

    ``create`` is the body of a create (:class:`Schema`: the members a client sets), and the merge
    patch's is made from it (:func:`merge_patch_schema`) unless ``patch`` gives another (every member
    optional: ``omitted()`` from wharf_common.validation). ``out`` is a row as shown
    (:class:`Representation`), its members in the table's column order. The table has the columns
    ``MANAGED_COLUMNS`` (``id`` uuid, ``owner`` the creator's account id, the timestamps) and one
    for each member of the schemas. ``conflict`` is the answer to a unique constraint's violation.
    """

    def __init__(
        self,
        name: str,
        *,
        item: str,
        table: Table,
        create: type[Schema],
        out: type[Representation],
        policy: Policy,
        conflict: Problem | None = None,
        patch: type[BaseModel] | None = None,
    ) -> None:
        self.name, self.item, self.table, self.policy, self.conflict = name, item, table, policy, conflict
        self.create_schema, self.out_schema = create, out
        self.patch_schema = patch or merge_patch_schema(create, item)
        _check_declaration(self)
        self.fields = tuple(column.name for column in table.c if column.name in out.model_fields)
        self.page_schema = create_model(
            f"{out.__name__.removesuffix('Out')}Page", items=(list[out], ...), next_cursor=(str | None, ...)
        )
        self.key = f"{item}_id"
        self.not_found = Problem(404, f"No {item} with this id.")
        writers = "owner or an admin" if policy.admins else "owner"
        self.forbidden = Problem(403, f"Only the {item}'s {writers} may change it.", slug="forbidden")
        self.blueprint = Blueprint(name, __name__, url_prefix=f"/{name}")
        self._add_routes()

    def to_json(self, row: Any) -> dict[str, Any]:
        return {name: _jsonable(getattr(row, name)) for name in self.fields}

    # The five operations, each behind the route of the same name.

    def list(self) -> Response:
        page, owner = page_request(), self.policy.visible_owner(current_principal())
        load = lambda: queries.page(table=self.table, limit=page.limit, after=page.after, owner=owner)  # noqa: E731
        return read_page(self.name, scope(owner), page, load, self.to_json)

    def read(self, key: uuid.UUID) -> Response:
        owner = self.policy.visible_owner(current_principal())
        load = lambda: queries.by_id(table=self.table, key=key, owner=owner)  # noqa: E731
        return read_item(self.name, key, load, self.to_json, self.not_found, scope=scope(owner))

    def create(self) -> Response:
        owner = current_principal().subject
        values = {**parse_body(self.create_schema).model_dump(), "id": uuid.uuid4(), "owner": owner}
        location = lambda row: url_for(f"{self.name}.get_{self.item}", **{self.key: str(row.id)})  # noqa: E731
        response, created = insert_answered(self.table, values, self.to_json, location, self.conflict)
        if created is not None:
            self._changed(None, owner)
        return response

    def patch(self, key: uuid.UUID) -> Response:
        """Apply a merge patch and retire the cached copies (nothing to do if nothing changes). Without
        If-Match, one conditional UPDATE in its transaction does it all (whose row, whether anything
        differs); the row is read only when it changed nothing, to answer it as it is, 403 or 404."""
        changes = merge_patch(self.patch_schema)
        if request.if_match or common.of().settings.require_if_match:
            return self._patch_matching(key, changes)
        principal, session = current_principal(), write_connection()
        if changes:
            writer = self.policy.writable_owner(principal)
            update = functools.partial(
                queries.update_if_changed, session, table=self.table, key=key, values=changes, owner=writer
            )
            row = committed(session, update, self.conflict)
            if row is not None:
                self._changed(key, row.owner)
                return json_response(json_bytes(self.to_json(row)), etag=True)
        row = queries.by_id(table=self.table, key=key, session=session)
        session.rollback()
        if row is None or not self.policy.may_write(principal, row.owner):
            raise self._refusal(principal, row)
        return json_response(json_bytes(self.to_json(row)), etag=True)

    def _patch_matching(self, key: uuid.UUID, changes: dict[str, Any]) -> Response:
        """The patch with If-Match: the row locked, its ETag compared, then changed, in one transaction."""
        session = get_session()
        row = self._locked(session, key)
        if all(getattr(row, name) == value for name, value in changes.items()):
            session.rollback()
        else:
            update = lambda: queries.update_by_id(session, table=self.table, key=key, values=changes)  # noqa: E731
            row = committed(session, update, self.conflict)
            self._changed(key, row.owner)
        return json_response(json_bytes(self.to_json(row)), etag=True)

    def delete(self, key: uuid.UUID) -> Response:
        session = get_session()
        row = self._locked(session, key)
        committed(session, lambda: queries.delete_by_id(session, table=self.table, key=key), None)
        self._changed(key, row.owner)
        return Response(status=204)

    # The routes: each documented (OpenAPI) and behind require_auth; the policy is checked above.

    def _add_routes(self) -> None:
        one, item_rule = f"one {self.item}", f"/<uuid:{self.key}>"
        own = self.policy.read is Readers.OWNER
        not_found: dict[int, Doc | str] = {404: f"No {self.item} with this id" + (" that you may read" if own else "")}
        conflict: dict[int, Doc | str] = {409: self.conflict.detail.rstrip(".")} if self.conflict else {}
        in_progress = "a request with this Idempotency-Key is still in progress"
        writes = {
            **not_found,
            **({} if own else {403: "Not the owner" + (" and not an admin" if self.policy.admins else "")}),
            412: "If-Match does not match the current ETag",
            428: "If-Match is missing, and this server requires it (REQUIRE_IF_MATCH)",
        }
        self._route(
            "GET",
            "",
            f"list_{self.name}",
            self.list,
            f"List {self.name}, in id order, one page at a time",
            parameters=LIST_PARAMETERS,
            responses={
                200: Doc(f"A page of {self.name}", self.page_schema, headers=("X-Cache",)),
                422: "Bad limit or cursor",
            },
        )
        self._route(
            "POST",
            "",
            f"create_{self.item}",
            self.create,
            f"Create {one} (safe to retry with an Idempotency-Key)",
            body=self.create_schema,
            parameters=(IDEMPOTENCY_KEY,),
            responses={
                201: Doc("Created", self.out_schema, headers=("Location", "ETag", "Idempotent-Replayed")),
                409: ", or ".join([*map(str, conflict.values()), in_progress]).capitalize(),
                422: "Invalid fields, or the Idempotency-Key was used with another body",
            },
        )
        self._route(
            "GET",
            item_rule,
            f"get_{self.item}",
            self.read,
            f"Read one {self.item}",
            parameters=(IF_NONE_MATCH,),
            responses={
                200: Doc(f"The {self.item}", self.out_schema, headers=("ETag", "X-Cache")),
                304: Doc("Not modified (If-None-Match matched)", headers=("ETag",)),
                **not_found,
            },
        )
        self._route(
            "PATCH",
            item_rule,
            f"patch_{self.item}",
            self.patch,
            f"Change {one}'s {_either(list(self.patch_schema.model_fields))} (JSON merge patch)",
            body=self.patch_schema,
            body_media_types=MERGE_PATCH_TYPES,
            parameters=(IF_MATCH,),
            responses={200: Doc(f"The changed {self.item}", self.out_schema, headers=("ETag",)), **conflict, **writes},
        )
        self._route(
            "DELETE",
            item_rule,
            f"delete_{self.item}",
            self.delete,
            f"Delete {one}",
            parameters=(IF_MATCH,),
            responses={204: Doc("Deleted"), **writes},
        )

    def _route(
        self, method: str, rule: str, endpoint: str, handler: Callable[..., Response], summary: str, **doc: Any
    ) -> None:
        def view(**path: uuid.UUID) -> Response:
            return handler(*path.values())

        view.__name__ = endpoint
        documented = operation(summary, description=self.policy.describe(), tags=(self.name,), **doc)
        guarded = documented(require_auth(view))
        guarded.wharf_resource = self.name  # type: ignore[attr-defined] - checked by mount()
        self.blueprint.add_url_rule(rule, endpoint, guarded, methods=[method])

    # What the operations share.

    def _locked(self, session: Session, key: uuid.UUID) -> Row[Any]:
        """The row, locked until the session's transaction ends, once the policy lets the caller
        change it (else 403 where it may read the row, 404 where it may not) and its If-Match (if
        any) holds. Without If-Match where the settings require it: 428."""
        if common.of().settings.require_if_match and not request.if_match:  # type: ignore[attr-defined]
            raise Problem(
                428,
                "This server requires If-Match with the resource's current ETag on PATCH and DELETE.",
                slug="precondition-required",
            )
        row = queries.lock_by_id(session, table=self.table, key=key)
        principal = current_principal()
        if row is None or not self.policy.may_write(principal, row.owner):
            raise self._refusal(principal, row)
        if request.if_match and not request.if_match.contains(etag_of(json_bytes(self.to_json(row)))):
            raise Problem(412, "The resource has changed since the given ETag (If-Match).", slug="precondition-failed")
        return row

    def _refusal(self, principal: Principal, row: Row[Any] | None) -> Problem:
        """Why ``principal`` may not change ``row``: 403 where it may read it, else 404 (as if none)."""
        readable = row is not None and self.policy.may_read(principal, row.owner)
        return self.forbidden if readable else self.not_found

    def _changed(self, key: uuid.UUID | None, owner: str | None) -> None:
        """After a committed write: retire the cached row (``key``) and the pages that list it."""
        item_id = str(key) if key is not None else None
        extensions.of().cache.changed(self.name, item_id, scopes=self.policy.scopes_of(owner))


def _check_declaration(resource: Resource) -> None:
    """Refuse at import what would fail at the first request: missing columns, a required patch
    member, a schema without a valid example."""
    columns = set(resource.table.c.keys())
    schemas = (resource.create_schema, resource.patch_schema, resource.out_schema)
    missing = {*MANAGED_COLUMNS, *(field for schema in schemas for field in schema.model_fields)} - columns
    required = [name for name, field in resource.patch_schema.model_fields.items() if field.is_required()]
    if missing or required:
        raise TypeError(
            f"resource {resource.name}: no column for {sorted(missing)}, or required patch members {required}"
        )
    for schema in schemas[:2]:
        for found in _examples(schema):
            schema.model_validate(found)


def _examples(schema: type[BaseModel]) -> list[dict[str, Any]]:
    extra = schema.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    if not examples or not all(isinstance(found, dict) for found in examples):
        raise TypeError(f"{schema.__name__} needs model_config json_schema_extra={{'examples': [{{...}}, ...]}}")
    return [dict(found) for found in examples]


def example(schema: type[BaseModel]) -> dict[str, Any]:
    """The first of the schema's ``examples`` (every resource's create schema has one; its merge
    patch schema too): the document shows them, the policy test sends them."""
    return _examples(schema)[0]


RESOURCES = "wharf_api.resources"  # the key of the app's registered resources in app.extensions


def mount(app: Flask, *resources: Resource) -> None:
    """Serve ``resources`` on ``app``. Every route of a resource's blueprint must be the toolkit's
    (so the policy holds on each one): a route added to it by hand stops the app here."""
    for resource in resources:
        app.register_blueprint(resource.blueprint)
        foreign = [
            rule.rule
            for rule in app.url_map.iter_rules()
            if rule.endpoint.startswith(f"{resource.name}.")
            and getattr(app.view_functions[rule.endpoint], "wharf_resource", None) != resource.name
        ]
        if foreign:
            raise TypeError(f"resource {resource.name}: routes not made by the toolkit: {foreign}")
    app.extensions.setdefault(RESOURCES, []).extend(resources)


def registered(app: Flask) -> tuple[Resource, ...]:
    """The resources ``app`` serves, in the order they were mounted."""
    return tuple(app.extensions.get(RESOURCES, ()))


def describe(app: Flask) -> str:
    """The OpenAPI document's description: the resources ``app`` serves, each with its policy."""
    resources = " ".join(f"`/{r.name}`: {r.policy.describe()}" for r in registered(app))
    return f"The resources and who may do what with them. {resources} Errors are RFC 9457 problem documents."
