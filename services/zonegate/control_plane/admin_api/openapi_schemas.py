"""JSON Schemas (OpenAPI 3.1 dialect) for the Admin API's bodies: entities, pages and Kong's errors.

Entity schemas are derived from Kong's field description that ``GET /schemas/{entity}`` serves
(``schemas.field_json``), so the two views of a field cannot drift apart. Three shapes per kind:

* as **returned** (``Service``): every field present; a field is ``null``-able unless it is
  required, since a client may send an explicit ``null`` for any optional field, defaults or not;
  ids and timestamps are always set. Certificates carry the names of their SNIs.
* as **written** (``ServiceCreate``, ``ServicePut``, ``ServicePatch``): what validation accepts.
  Required fields without a default are required on create and put (PATCH merges, so none
  are), a foreign key is ``{"id": uuid}`` or a unique field of the referenced entity
  (``{"name": "billing"}``, resolved like Kong's ``resolve_foreign``), unknown fields are refused,
  and shorthands (a service's ``url``, a certificate's ``snis``) are listed.
* as **flattened by** ``POST /config`` (``ServiceRecord``): as returned, without timestamps.

Error bodies are Kong's tables by code (``kong/db/errors.lua``) and plain ``{"message"}`` bodies.
Rules that live only in validator functions (host syntax, regexes) have no JSON Schema here: a
value the schema allows may still get Kong's 400, which every write declares.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from zonegate.control_plane.admin_api.errors import (
    FOREIGN_KEYS_UNRESOLVED,
    INVALID_OPTIONS,
    INVALID_PRIMARY_KEY,
    INVALID_SIZE,
    INVALID_UNIQUE,
)
from zonegate.control_plane.admin_api.schemas import field_json
from zonegate.control_plane.errors import (
    INVALID_OFFSET,
    NOT_FOUND,
    OPERATION_UNSUPPORTED,
    PRIMARY_KEY_VIOLATION,
    REFERENCED_BY_OTHERS,
)
from zonegate.core.entities import BY_NAME
from zonegate.core.errors import (
    DECLARATIVE_CONFIG,
    FOREIGN_KEY_VIOLATION,
    SCHEMA_VIOLATION,
    UNIQUE_VIOLATION,
)
from zonegate.core.fields import AUTO_FIELDS
from zonegate.core.schema import TIMESTAMP_FIELDS

JsonSchema = dict[str, Any]
Shape = Literal["response", "record", "create", "put", "patch"]

REF_PREFIX: Final = "#/components/schemas/"
UUID: Final[JsonSchema] = {"type": "string", "format": "uuid"}

# Kong's error codes the Admin API answers with (``kong/db/errors.lua``), and their names.
ERROR_NAMES: Final[dict[int, tuple[str, str]]] = {
    # code: (component name, Kong's ``name``; a pattern where the name carries a field)
    INVALID_PRIMARY_KEY: ("InvalidPrimaryKeyError", "invalid primary key"),
    SCHEMA_VIOLATION: ("SchemaViolationError", "schema violation"),
    PRIMARY_KEY_VIOLATION: ("PrimaryKeyViolationError", "primary key violation"),
    FOREIGN_KEY_VIOLATION: ("ForeignKeyViolationError", "foreign key violation"),
    UNIQUE_VIOLATION: ("UniqueViolationError", "unique constraint violation"),
    NOT_FOUND: ("NotFoundError", "not found"),
    INVALID_OFFSET: ("InvalidOffsetError", "invalid offset"),
    INVALID_SIZE: ("InvalidSizeError", "invalid size"),
    INVALID_UNIQUE: ("InvalidUniqueError", "^invalid unique "),
    INVALID_OPTIONS: ("InvalidOptionsError", "invalid options"),
    OPERATION_UNSUPPORTED: ("OperationUnsupportedError", "operation unsupported"),
    FOREIGN_KEYS_UNRESOLVED: ("ForeignKeysUnresolvedError", "foreign keys unresolved"),
    DECLARATIVE_CONFIG: ("DeclarativeConfigError", "invalid declarative configuration"),
    REFERENCED_BY_OTHERS: ("ReferencedByOthersError", "referenced by others"),
}
# Codes whose body carries ``fields``; Kong's nested error table (see ``core.errors``).
_WITH_FIELDS: Final = frozenset(
    {
        INVALID_PRIMARY_KEY,
        SCHEMA_VIOLATION,
        PRIMARY_KEY_VIOLATION,
        FOREIGN_KEY_VIOLATION,
        UNIQUE_VIOLATION,
        NOT_FOUND,
        FOREIGN_KEYS_UNRESOLVED,
        DECLARATIVE_CONFIG,
    }
)


def ref(name: str) -> JsonSchema:
    return {"$ref": REF_PREFIX + name}


def nullable(schema: JsonSchema) -> JsonSchema:
    """The schema, or ``null``: a type list where there is a type, else a union."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    out = dict(schema)
    kind = out.get("type")
    if kind is None:
        return out  # no type constraint: null is already allowed
    out["type"] = [*kind, "null"] if isinstance(kind, list) else [kind, "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def component_name(kind: str) -> str:
    """``keyauth_credentials`` -> ``KeyauthCredential``: CamelCase, singular."""
    camel = "".join(part.capitalize() for part in kind.split("_"))
    return camel[:-1] if camel.endswith("s") else camel


# -- fields ----------------------------------------------------------------------------------------


def _string(field: Mapping[str, Any]) -> JsonSchema:
    # Kong gives every string a minimum length of 1 unless the schema says otherwise.
    out: JsonSchema = {"type": "string", "minLength": field.get("len_min", 1)}
    if "len_max" in field:
        out["maxLength"] = field["len_max"]
    if field.get("uuid"):
        out["format"] = "uuid"
    if "starts_with" in field:
        out["pattern"] = "^" + re.escape(field["starts_with"])
    return out


def _numeric(field: Mapping[str, Any]) -> JsonSchema:
    out: JsonSchema = {"type": field["type"]}
    if "between" in field:
        out["minimum"], out["maximum"] = field["between"]
    if "gt" in field:
        out["exclusiveMinimum"] = field["gt"]
    return out


def _list(field: Mapping[str, Any], shape: Shape) -> JsonSchema:
    out: JsonSchema = {"type": "array", "items": value_schema(field["elements"], shape)}
    if "len_min" in field:
        out["minItems"] = field["len_min"]
    if "len_max" in field:
        out["maxItems"] = field["len_max"]
    if field["type"] == "set" and shape in ("response", "record"):
        out["uniqueItems"] = True  # sets are stored de-duplicated; a write may repeat values
    return out


def _map(field: Mapping[str, Any], shape: Shape) -> JsonSchema:
    out: JsonSchema = {"type": "object", "additionalProperties": value_schema(field["values"], shape)}
    keys = value_schema(field["keys"], shape)
    out["propertyNames"] = {k: v for k, v in keys.items() if k in ("minLength", "maxLength", "pattern")}
    if "len_min" in field:
        out["minProperties"] = field["len_min"]
    if "len_max" in field:
        out["maxProperties"] = field["len_max"]
    return out


def _record(field: Mapping[str, Any], shape: Shape) -> JsonSchema:
    if not field.get("fields"):
        return {"type": "object"}  # free-form (a plugin's config, until plugin schemas exist)
    pairs = [next(iter(item.items())) for item in field["fields"]]
    return object_schema(pairs, shape)


def _foreign(field: Mapping[str, Any], shape: Shape) -> JsonSchema:
    if shape in ("response", "record"):
        return {
            "type": "object",
            "properties": {"id": UUID},
            "required": ["id"],
            "additionalProperties": False,
        }
    reference = BY_NAME[field["reference"]]
    # What ``writes.resolve_foreign`` resolves: the id, or one unique field of the referenced kind.
    keys = [
        name
        for name, spec in reference.fields
        if name != "id" and spec.kind == "string" and (spec.unique or reference.endpoint_key == name)
    ]
    properties: JsonSchema = {"id": UUID, **{name: {"type": "string", "minLength": 1} for name in keys}}
    return {"type": "object", "properties": properties, "minProperties": 1, "additionalProperties": False}


def value_schema(field: Mapping[str, Any], shape: Shape) -> JsonSchema:
    """The JSON Schema of a non-null value of a field, from its Kong description (``field_json``)."""
    kind = field["type"]
    out: JsonSchema
    if kind == "string":
        out = _string(field)
    elif kind in ("integer", "number"):
        out = _numeric(field)
    elif kind == "boolean":
        out = {"type": "boolean"}
    elif kind in ("array", "set"):
        out = _list(field, shape)
    elif kind == "map":
        out = _map(field, shape)
    elif kind == "record":
        out = _record(field, shape)
    elif kind == "foreign":
        out = _foreign(field, shape)
    else:
        out = {}  # "any"
    if "one_of" in field:
        out["enum"] = list(field["one_of"])
    if "description" in field:
        out["description"] = field["description"]
    if "default" in field and shape not in ("response", "record"):
        out["default"] = field["default"]
    return out


def _always_set(name: str, field: Mapping[str, Any], shape: Shape) -> bool:
    """Whether the field is never null in an answer: required, or filled in by Zonegate itself."""
    if field.get("required"):
        return True
    return shape in ("response", "record") and name in AUTO_FIELDS


def _listed_as_required(field: Mapping[str, Any], shape: Shape) -> bool:
    if shape in ("response", "record"):
        return True  # answers carry every field, null when unset
    return shape != "patch" and bool(field.get("required")) and "default" not in field


def object_schema(fields: Iterable[tuple[str, Mapping[str, Any]]], shape: Shape) -> JsonSchema:
    """A record of fields: answers list every field; writes require what has neither default nor auto."""
    properties: JsonSchema = {}
    required: list[str] = []
    for name, field in fields:
        schema = value_schema(field, shape)
        properties[name] = schema if _always_set(name, field, shape) else nullable(schema)
        if _listed_as_required(field, shape):
            required.append(name)
    out: JsonSchema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


# -- entities --------------------------------------------------------------------------------------

# Write-only shorthands of some kinds (``services.expand_url``, ``writes.snis_list``).
_SHORTHANDS: Final[dict[str, dict[str, JsonSchema]]] = {
    "services": {
        "url": {
            "type": ["string", "null"],
            "description": "Shorthand for protocol, host, port and path (e.g. https://billing:8443/v1).",
        }
    },
    "certificates": {
        "snis": {
            "type": ["array", "string", "null"],
            "items": {"type": "string", "minLength": 1},
            "description": "Names of SNIs to serve with this certificate (or one comma-separated string).",
        }
    },
}


def _kong_fields(kind: str, skip: Iterable[str] = ()) -> list[tuple[str, dict[str, Any]]]:
    skipped = set(skip)
    return [(name, field_json(name, spec)) for name, spec in BY_NAME[kind].fields if name not in skipped]


def entity_schema(kind: str) -> JsonSchema:
    """An entity as the Admin API returns it."""
    schema = BY_NAME[kind]
    out = object_schema(_kong_fields(kind), "response")
    if kind == "certificates":
        # ``lookup.present``: the sorted names of the certificate's SNIs (Kong's pseudo-field).
        out["properties"]["snis"] = {"type": "array", "items": {"type": "string"}}
        out["required"].append("snis")
    if schema.description:
        out["description"] = schema.description
    return out


def record_schema(kind: str) -> JsonSchema:
    """An entity as ``POST /config`` answers it: as stored, without timestamps."""
    return object_schema(_kong_fields(kind, TIMESTAMP_FIELDS), "record")


def _at_least_one_of(kind: str) -> list[tuple[str, ...]]:
    """The fields of each ``schema.at_least_one_of`` check of the kind (one of them must be set)."""
    return [
        check.reads
        for check in BY_NAME[kind].checks
        if getattr(check.fn, "__qualname__", "").startswith("at_least_one_of.")
    ]


def write_schema(kind: str, shape: Shape, *, set_by_url: Iterable[str] = ()) -> JsonSchema:
    """A request body for ``kind``; ``set_by_url`` names fields the URL provides (no longer required)."""
    # Timestamps are Zonegate's (dropped from writes); PATCH ignores an id, as Kong does.
    skip = (*TIMESTAMP_FIELDS, "id") if shape == "patch" else TIMESTAMP_FIELDS
    out = object_schema(_kong_fields(kind, skip), shape)
    out["properties"].update(_SHORTHANDS.get(kind, {}))
    waived = set(set_by_url)
    required = [name for name in out.pop("required", []) if name not in waived]
    alternatives: list[tuple[str, ...]] = []
    if kind == "services" and "host" in required:
        required.remove("host")  # ``url`` sets the host: one of the two is needed
        alternatives.append(("host", "url"))
    if shape == "create":
        alternatives += [names for names in _at_least_one_of(kind) if not waived & set(names)]
    if required:
        out["required"] = required
    choices = [{"anyOf": [{"required": [name]} for name in names]} for names in alternatives]
    if len(choices) == 1:
        out.update(choices[0])
    elif choices:
        out["allOf"] = choices
    return out


def page_schema(item: JsonSchema, description: str) -> JsonSchema:
    """Kong's page: ``data``, ``next`` (the next page's link, or null), ``offset`` when there is one."""
    return {
        "type": "object",
        "description": description,
        "properties": {
            "data": {"type": "array", "items": item},
            "next": {"type": ["string", "null"], "description": "Path and query of the next page."},
            "offset": {"type": "string", "description": "Pass as ?offset= for the next page."},
        },
        "required": ["data", "next"],
        "additionalProperties": False,
    }


# -- errors ----------------------------------------------------------------------------------------

MESSAGE: Final[JsonSchema] = {
    "type": "object",
    "description": 'Kong\'s plain error body, e.g. {"message": "Not found"}.',
    "properties": {"message": {"type": "string"}},
    "required": ["message"],
    "additionalProperties": False,
}

_ERROR_TABLE: Final[JsonSchema] = {
    "description": "Kong's nested error table: a message per field, a list per array, @entity for the rest.",
    "type": "object",
}


def error_schema(code: int) -> JsonSchema:
    """Kong's error body for one code: ``{"code", "name", "message"}`` and the extras it carries."""
    _, name = ERROR_NAMES[code]
    name_schema: JsonSchema = {"type": "string", "pattern": name} if name.startswith("^") else {"const": name}
    properties: JsonSchema = {
        "code": {"const": code},
        "name": name_schema,
        "message": {"type": "string"},
    }
    required = ["code", "name", "message"]
    if code in _WITH_FIELDS:
        properties["fields"] = _ERROR_TABLE
        required.append("fields")
    if code == INVALID_OPTIONS:
        properties["options"] = {"type": "object", "additionalProperties": {"type": "string"}}
        required.append("options")
    if code == DECLARATIVE_CONFIG:
        properties["flattened_errors"] = {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                "required": ["path", "message"],
                "additionalProperties": False,
            },
        }
        required.append("flattened_errors")
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def error_components() -> dict[str, JsonSchema]:
    out: dict[str, JsonSchema] = {"Message": MESSAGE}
    for code, (name, _) in ERROR_NAMES.items():
        out[name] = error_schema(code)
    return out


# -- Kong's schema format (GET /schemas/{entity}) ------------------------------------------------

KONG_FIELD: Final[JsonSchema] = {
    "type": "object",
    "description": "One field as Kong's schema endpoints describe it.",
    "properties": {
        "type": {
            "enum": [
                "string",
                "integer",
                "number",
                "boolean",
                "array",
                "set",
                "map",
                "record",
                "foreign",
                "any",
            ]
        },
        "required": {"type": "boolean"},
        "unique": {"type": "boolean"},
        "auto": {"type": "boolean"},
        "timestamp": {"type": "boolean"},
        "default": {},
        "len_min": {"type": "integer"},
        "len_max": {"type": "integer"},
        "one_of": {"type": "array"},
        "between": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
        "gt": {"type": "number"},
        "starts_with": {"type": "string"},
        "uuid": {"type": "boolean"},
        "reference": {"type": "string"},
        "on_delete": {"enum": ["restrict", "cascade"]},
        "elements": ref("KongField"),
        "keys": ref("KongField"),
        "values": ref("KongField"),
        "fields": ref("KongFields"),
        "description": {"type": "string"},
    },
    "required": ["type"],
    "additionalProperties": False,
}

KONG_FIELDS: Final[JsonSchema] = {
    "type": "array",
    "description": "Fields in schema order, each a one-key object: {name: field}.",
    "items": {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": ref("KongField"),
    },
}

KONG_SCHEMA: Final[JsonSchema] = {
    "type": "object",
    "properties": {"fields": ref("KongFields")},
    "required": ["fields"],
    "additionalProperties": False,
}
