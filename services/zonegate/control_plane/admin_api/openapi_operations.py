"""OpenAPI operations of the entity endpoints, recognised by the shapes ``entities.register`` builds.

``classify`` reads a path template (``/services/{services}/routes``) as what it is about: a
collection, one entity, the entity a foreign key points at, a parent's children or one child.
Operations are then derived from the entity schemas and from what the handlers in ``entities``,
``lookup`` and ``writes`` can answer: a URL key that is not a UUID where the kind has no other
key is Kong's code 1; a write can fail validation (code 2), name a foreign key that resolves to
nothing (13) or points nowhere (4), or take a unique value (409); a delete can be refused while
other entities point at the entity (4, or 19 for CA certificates). On a node without a database
every entity write is refused with Kong's code 12 (405), after the same validation.

``Components`` collects the schemas operations refer to, so the document holds only those used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from zonegate.control_plane.admin_api import openapi_schemas as js
from zonegate.control_plane.admin_api.auth import HEADER as TOKEN_HEADER
from zonegate.control_plane.admin_api.entities import COLLECTION_PATHS, NESTED_PATHS
from zonegate.control_plane.admin_api.errors import (
    FOREIGN_KEYS_UNRESOLVED,
    INVALID_OPTIONS,
    INVALID_PRIMARY_KEY,
    INVALID_SIZE,
)
from zonegate.control_plane.admin_api.lookup import lookup_field
from zonegate.control_plane.admin_api.pagination import DEFAULT_SIZE, MAX_SIZE, MAX_TAGS
from zonegate.control_plane.errors import (
    INVALID_OFFSET,
    NOT_FOUND,
    OPERATION_UNSUPPORTED,
    PRIMARY_KEY_VIOLATION,
    REFERENCED_BY_OTHERS,
)
from zonegate.core.entities import BY_NAME
from zonegate.core.errors import FOREIGN_KEY_VIOLATION, SCHEMA_VIOLATION, UNIQUE_VIOLATION

JSON: Final = "application/json"
FORM: Final = "application/x-www-form-urlencoded"

Json = dict[str, Any]
Shape = Literal["collection", "entity", "referenced", "children", "child", "children_all"]
WRITES: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_KIND_BY_COLLECTION: Final = {path: kind for kind, path in COLLECTION_PATHS.items()}
# How summaries name one entity of a kind (a kind missing here reads as its plural, trimmed).
_SINGULAR: Final = {
    "snis": "SNI",
    "ca_certificates": "CA certificate",
    "keyauth_credentials": "key-auth credential",
    "basicauth_credentials": "basic-auth credential",
    "jwt_secrets": "JWT secret",
    "acls": "ACL",
}


# -- components ------------------------------------------------------------------------------------------


@dataclass
class Components:
    """Schemas, added the first time an operation refers to them."""

    schemas: dict[str, Json] = field(default_factory=dict)

    def schema(self, name: str, build: Callable[[], Json]) -> Json:
        if name not in self.schemas:
            self.schemas[name] = build()
        return js.ref(name)

    def entity(self, kind: str) -> Json:
        return self.schema(js.component_name(kind), lambda: js.entity_schema(kind))

    def record(self, kind: str) -> Json:
        return self.schema(js.component_name(kind) + "Record", lambda: js.record_schema(kind))

    def page(self, kind: str) -> Json:
        item = self.entity(kind)
        return self.schema(
            js.component_name(kind) + "Page", lambda: js.page_schema(item, f"A page of {kind}.")
        )

    def write(self, kind: str, shape: js.Shape, set_by_url: tuple[str, ...] = ()) -> tuple[Json, Json]:
        """The reference to a request body schema, and the schema itself (for the form encoding)."""
        schema = js.write_schema(kind, shape, set_by_url=set_by_url)
        name = js.component_name(kind) + {"create": "Create", "put": "Put", "patch": "Patch"}.get(shape, "")
        parents = [BY_NAME[kind].field(f).reference for f in set_by_url if _foreign_key(kind, f) is not None]
        if parents and schema != js.write_schema(kind, shape):
            name += "Under" + js.component_name(parents[0])
        if self.schemas.setdefault(name, schema) != schema:
            raise AssertionError(f"two request bodies named {name}: name them apart")
        return js.ref(name), schema

    def errors(self, codes: Iterable[int], *, message: bool = False) -> Json:
        """Kong error bodies with these codes (and the plain ``{"message"}`` one): any of them."""
        refs = [js.ref("Message")] if message else []
        refs += [js.ref(js.ERROR_NAMES[code][0]) for code in sorted(set(codes))]
        return refs[0] if len(refs) == 1 else {"anyOf": refs}


SHARED_RESPONSES: Final[dict[str, Json]] = {
    name: {"description": description, "content": {JSON: {"schema": js.ref("Message")}}}
    for name, description in (
        ("NotFound", "No such entity (or parent), or it does not belong to that parent."),
        ("PayloadTooLarge", "The body is larger than the Admin API accepts."),
        ("UnsupportedMediaType", "A body in a media type other than JSON, form or multipart."),
        ("Unavailable", "The store cannot be reached, or its schema is not ready: retry later."),
        ("Unauthorized", f"The {TOKEN_HEADER} header is missing or wrong."),
    )
}

QUERY_PARAMETERS: Final[dict[str, Json]] = {
    "size": {
        "name": "size",
        "in": "query",
        "description": f"Entries per page (default {DEFAULT_SIZE}).",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_SIZE, "default": DEFAULT_SIZE},
    },
    "offset": {
        "name": "offset",
        "in": "query",
        "description": "The `offset` of the previous page's answer.",
        "schema": {"type": "string"},
    },
    "tags": {
        "name": "tags",
        "in": "query",
        "description": f"`a,b`: entities with every tag; `a/b`: with any of them (at most {MAX_TAGS}).",
        "schema": {"type": "string"},
    },
}


def param(name: str) -> Json:
    return {"$ref": f"#/components/parameters/{name}"}


def shared(name: str) -> Json:
    return {"$ref": f"#/components/responses/{name}"}


def answer(description: str, schema: Json | None = None) -> Json:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _is_object(schema: Json) -> bool:
    kind = schema.get("type")
    return "object" in (kind if isinstance(kind, list) else [kind])


def body(schema_ref: Json, schema: Json, *, required: bool, example: Json | None = None) -> Json:
    """JSON and form bodies; in a form, records and foreign keys are ``a[b]=x`` (or ``a.b=x``)."""
    objects = [name for name, prop in schema.get("properties", {}).items() if _is_object(prop)]
    as_json: Json = {"schema": schema_ref}
    if example is not None:
        as_json["example"] = example
    form: Json = {"schema": schema_ref}
    if objects:
        form["encoding"] = {name: {"style": "deepObject", "explode": True} for name in objects}
    return {"required": required, "content": {JSON: as_json, FORM: form}}


def error_answers(
    c: Components, codes: Iterable[int], *, message: bool, not_found: bool, conflict: bool, body: bool
) -> Json:
    """400 (these codes, and ``{"message"}`` if asked), 404, 409, 413 and 415 for bodies, and 503."""
    answers: Json = {}
    codes = set(codes)
    if codes or message:
        answers["400"] = answer("Invalid request (Kong's error table).", c.errors(codes, message=message))
    if not_found:
        answers["404"] = shared("NotFound")
    if conflict:
        answers["409"] = answer("A unique field or key is already taken.", c.errors({UNIQUE_VIOLATION}))
    if body:
        answers["413"] = shared("PayloadTooLarge")
        answers["415"] = shared("UnsupportedMediaType")
    answers["503"] = shared("Unavailable")
    return answers


# -- recognising entity routes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntityRoute:
    """What an entity path is about: ``kind`` (the entity answered), its parent and foreign key."""

    shape: Shape
    kind: str
    parent: str | None = None  # children, child: the parent kind; referenced: the kind whose key is followed
    fk: str | None = None


def singular(kind: str) -> str:
    return _SINGULAR.get(kind, kind[:-1] if kind.endswith("s") else kind).replace("_", " ")


def _child_of(parent: str, nested: str) -> tuple[str, str] | None:
    """The kind named ``nested`` under ``parent`` and its foreign key to it."""
    for kind, schema in BY_NAME.items():
        if NESTED_PATHS.get(kind, COLLECTION_PATHS.get(kind)) != nested:
            continue
        for fk, spec in schema.foreign_keys():
            if spec.reference == parent:
                return kind, fk
    return None


def _foreign_key(kind: str, name: str) -> str | None:
    """The kind that ``kind.name`` points at, when that field is a foreign key."""
    schema = BY_NAME[kind]
    if not schema.has_field(name) or schema.field(name).kind != "foreign":
        return None
    return schema.field(name).reference


def classify(path: str) -> EntityRoute | None:
    """The entity route a path template is, by the shapes ``entities.register`` builds; else None."""
    parts = path.strip("/").split("/")
    kind = _KIND_BY_COLLECTION.get(parts[0])
    if kind is None or (len(parts) > 1 and parts[1] != f"{{{kind}}}"):
        return None
    if len(parts) <= 2:
        return EntityRoute("collection" if len(parts) == 1 else "entity", kind)
    reference = _foreign_key(kind, parts[2])
    if len(parts) == 3 and reference is not None:
        return EntityRoute("referenced", reference, kind, parts[2])
    child = _child_of(kind, parts[2])
    if child is None:
        return None
    child_kind, fk = child
    if len(parts) == 3:
        return EntityRoute("children", child_kind, kind, fk)
    if len(parts) == 4 and parts[3] == "all":
        return EntityRoute("children_all", child_kind, kind, fk)
    if len(parts) == 4 and parts[3] == f"{{{child_kind}}}":
        return EntityRoute("child", child_kind, kind, fk)
    return None


# -- path parameters -------------------------------------------------------------------------------------


def _key_parameter(kind: str, scoped: bool, examples: dict[str, str]) -> Json:
    field_name = lookup_field(kind, scoped)
    schema: Json = {"type": "string", "minLength": 1}
    if kind == "certificates":
        description = "The certificate's id, or one of its SNI names."
    elif field_name:
        description = f"The {singular(kind)}'s id or {field_name}."
    else:
        description = f"The {singular(kind)}'s id."
        schema = js.UUID  # anything else is Kong's invalid primary key (400)
    out: Json = {"name": kind, "in": "path", "required": True, "description": description, "schema": schema}
    example = examples.get(f"{kind}:{field_name}", examples.get(kind)) if scoped else examples.get(kind)
    if example is not None:
        out["example"] = example
    return out


def entity_parameters(route: EntityRoute, examples: dict[str, str]) -> list[Json]:
    if route.shape == "collection":
        return []
    if route.shape == "entity":
        return [_key_parameter(route.kind, False, examples)]
    assert route.parent is not None
    parent = _key_parameter(route.parent, False, examples)
    return [parent, _key_parameter(route.kind, True, examples)] if route.shape == "child" else [parent]


# -- what can go wrong -----------------------------------------------------------------------------------


def _lookup_codes(kind: str, scoped: bool) -> set[int]:
    """A URL key that is not a UUID where the kind has no other key is Kong's invalid primary key."""
    return set() if kind == "certificates" or lookup_field(kind, scoped) else {INVALID_PRIMARY_KEY}


def _route_lookup_codes(route: EntityRoute) -> set[int]:
    codes = (
        set()
        if route.shape in ("collection", "referenced")
        else _lookup_codes(route.kind, route.shape == "child")
    )
    if route.parent is not None:
        codes |= _lookup_codes(route.parent, False)
    return codes


def _write_codes(kind: str, method: str) -> set[int]:
    codes = {SCHEMA_VIOLATION}
    if BY_NAME[kind].foreign_keys():
        codes |= {FOREIGN_KEYS_UNRESOLVED, FOREIGN_KEY_VIOLATION}
    if method == "POST":
        codes.add(PRIMARY_KEY_VIOLATION)  # an id that another entity already has
    return codes


def _has_unique(kind: str) -> bool:
    schema = BY_NAME[kind]
    return bool(schema.unique_fields() or schema.cache_key)


def _delete_codes(kind: str) -> set[int]:
    """A delete refused because other entities still point at the entity."""
    codes: set[int] = set()
    for other in BY_NAME.values():
        if any(spec.reference == kind and spec.on_delete == "restrict" for _, spec in other.foreign_keys()):
            codes.add(FOREIGN_KEY_VIOLATION)
    if kind == "ca_certificates":
        codes.add(REFERENCED_BY_OTHERS)  # still listed in a service's ca_certificates
    return codes


def _where(route: EntityRoute) -> str:
    return f" of a {singular(route.parent)}" if route.parent is not None else ""


# -- operations --------------------------------------------------------------------------------------------


def _list_operation(c: Components, route: EntityRoute) -> Json:
    kind = route.kind
    parameters = [param("size"), param("offset")]
    if BY_NAME[kind].has_field("tags"):
        parameters.append(param("tags"))
    by_custom_id = route.shape == "collection" and kind == "consumers"
    if by_custom_id:
        parameters.append(
            {
                "name": "custom_id",
                "in": "query",
                "description": "Find the one consumer with this custom_id (a page of zero or one).",
                "schema": {"type": "string", "minLength": 1},
            }
        )
    codes = {INVALID_SIZE, INVALID_OFFSET, INVALID_OPTIONS} | _route_lookup_codes(route)
    return {
        "summary": f"List {kind.replace('_', ' ')}{_where(route)}",
        "parameters": parameters,
        "responses": {
            "200": answer("A page.", c.page(kind)),
            **error_answers(
                c, codes, message=by_custom_id, not_found=route.parent is not None, conflict=False, body=False
            ),
        },
    }


def _create_operation(c: Components, route: EntityRoute, example: Json | None) -> Json:
    kind = route.kind
    set_by_url = (route.fk,) if route.fk else ()
    schema_ref, schema = c.write(kind, "create", set_by_url)
    if example is not None and route.fk:
        example = {k: v for k, v in example.items() if k != route.fk}
    codes = _write_codes(kind, "POST") | _route_lookup_codes(route)
    return {
        "summary": f"Create a {singular(kind)}{_where(route)}",
        "requestBody": body(schema_ref, schema, required=True, example=example),
        "responses": {
            "201": answer("Created.", c.entity(kind)),
            **error_answers(
                c,
                codes,
                message=True,
                not_found=route.parent is not None,
                conflict=_has_unique(kind),
                body=True,
            ),
        },
    }


def _read_operation(c: Components, route: EntityRoute) -> Json:
    return {
        "summary": f"Fetch a {singular(route.kind)}{_where(route)}",
        "responses": {
            "200": answer("The entity.", c.entity(route.kind)),
            **error_answers(
                c, _route_lookup_codes(route), message=False, not_found=True, conflict=False, body=False
            ),
        },
    }


def _write_operation(c: Components, route: EntityRoute, method: str) -> Json:
    """PUT (create or replace, the URL key winning over the body's) or PATCH (merge)."""
    kind = route.kind
    shape: js.Shape = "put" if method == "PUT" else "patch"
    set_by_url: list[str] = []
    if route.shape == "child" and route.fk:
        set_by_url.append(route.fk)
    if method == "PUT" and route.shape != "referenced":
        # ``writes.put_by_key``: a name in the URL is written into the entity.
        set_by_url.append(lookup_field(kind, route.shape == "child") or "id")
    schema_ref, schema = c.write(kind, shape, tuple(set_by_url))
    answers: Json = {
        "200": answer("The entity as stored.", c.entity(kind)),
        **error_answers(
            c,
            _write_codes(kind, method) | _route_lookup_codes(route),
            message=True,
            not_found=method == "PATCH" or route.shape != "entity",
            conflict=_has_unique(kind),
            body=True,
        ),
    }
    if method == "PATCH":
        # Also when the entity goes between the lookup and the write (the store's code 6).
        answers["404"] = answer("No such entity.", c.errors({NOT_FOUND}, message=True))
    verb = "Create or replace" if method == "PUT" else "Update"
    return {
        "summary": f"{verb} a {singular(kind)}{_where(route)}",
        "requestBody": body(schema_ref, schema, required=method == "PUT"),
        "responses": answers,
    }


def _delete_operation(c: Components, route: EntityRoute) -> Json:
    summary = f"Delete a {singular(route.kind)}{_where(route)}"
    codes = _route_lookup_codes(route)
    if route.shape == "referenced":
        # Kong refuses to delete through a foreign key: 405 when it points somewhere, 404 when not.
        return {
            "summary": summary + " (refused)",
            "responses": {
                "405": answer("Not deleted through a foreign key.", js.ref("Message")),
                **error_answers(c, codes, message=False, not_found=True, conflict=False, body=False),
            },
        }
    return {
        "summary": summary,
        "description": "Answers 204 also when there is no such entity (at the top level, as Kong).",
        "responses": {
            "204": answer("Deleted, or there was nothing to delete."),
            **error_answers(
                c,
                codes | _delete_codes(route.kind),
                message=False,
                # under a parent; or a certificate named by an SNI that does not exist
                not_found=route.shape == "child" or route.kind == "certificates",
                conflict=False,
                body=False,
            ),
        },
    }


def entity_operation(c: Components, route: EntityRoute, method: str, example: Json | None) -> Json | None:
    """The operation for ``method`` on an entity route; None for a method this module does not know."""
    if route.shape in ("collection", "children", "children_all") and method == "GET":
        return _list_operation(c, route)
    if route.shape in ("collection", "children") and method == "POST":
        return _create_operation(c, route, example)
    if route.shape in ("entity", "child", "referenced"):
        if method == "GET":
            return _read_operation(c, route)
        if method in ("PUT", "PATCH"):
            return _write_operation(c, route, method)
        if method == "DELETE":
            return _delete_operation(c, route)
    return None


def without_database(c: Components, operation: Json, method: str) -> Json:
    """An entity write on a node without a database: validated, then refused (Kong's code 12, 405)."""
    responses = dict(operation["responses"])
    if "405" in responses:
        return operation  # refused before the store is asked (a delete through a foreign key)
    if method != "DELETE":  # deleting what is not there still succeeds
        for status in ("200", "201", "409"):
            responses.pop(status, None)
    responses["405"] = answer(
        "Entities are written only through POST /config on a node without a database.",
        c.errors({OPERATION_UNSUPPORTED}),
    )
    return {**operation, "responses": responses}
