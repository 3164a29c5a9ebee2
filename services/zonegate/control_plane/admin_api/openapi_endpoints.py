"""OpenAPI operations of the Admin API's fixed endpoints: the node, ``/config``, tags, schemas, clustering.

``FIXED`` maps each (path, method) to its OpenAPI tag and a builder of its operation. A new endpoint
that is not an entity route needs an entry here, or ``openapi.build_document`` refuses the route
table (``UndocumentedRoute``). Entries for routes an app does not install are ignored, so one table
serves the control plane and a node without a database alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from zonegate.control_plane.admin_api import openapi_schemas as js
from zonegate.control_plane.admin_api.config_endpoint import TEXT_TYPES
from zonegate.control_plane.admin_api.errors import INVALID_SIZE, INVALID_UNIQUE
from zonegate.control_plane.admin_api.openapi_operations import (
    FORM,
    JSON,
    Components,
    answer,
    body,
    error_answers,
    param,
    shared,
)
from zonegate.control_plane.errors import INVALID_OFFSET, PRIMARY_KEY_VIOLATION
from zonegate.core.entities import BY_NAME
from zonegate.core.errors import DECLARATIVE_CONFIG, FOREIGN_KEY_VIOLATION, SCHEMA_VIOLATION

DOCUMENT_PATH: Final = "/openapi.json"
MULTIPART: Final = "multipart/form-data"

Json = dict[str, Any]

Builder = Callable[[Components], Json]


def _root(c: Components) -> Json:
    plugin = {
        "type": "object",
        "properties": {"version": {"type": "string"}, "priority": {"type": ["integer", "null"]}},
        "required": ["version", "priority"],
        "additionalProperties": False,
    }
    schema = {
        "type": "object",
        "properties": {
            "tagline": {"type": "string"},
            "version": {"type": "string"},
            "edition": {"type": "string"},
            "hostname": {"type": "string"},
            "node_id": {"type": "string", "format": "uuid"},
            "plugins": {
                "type": "object",
                "properties": {
                    "available_on_server": {"type": "object", "additionalProperties": plugin},
                    "enabled_in_cluster": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["available_on_server", "enabled_in_cluster"],
                "additionalProperties": False,
            },
            "configuration": {"type": "object", "description": "Every setting; secrets masked."},
            "pids": {
                "type": "object",
                "properties": {"master": {"type": "integer"}},
                "required": ["master"],
                "additionalProperties": False,
            },
        },
        "required": [
            "tagline",
            "version",
            "edition",
            "hostname",
            "node_id",
            "plugins",
            "configuration",
            "pids",
        ],
        "additionalProperties": False,
    }
    return {
        "summary": "Node information",
        "responses": {"200": answer("This node.", schema), "503": shared("Unavailable")},
    }


def _status(c: Components) -> Json:
    schema = {
        "type": "object",
        "properties": {
            "database": {
                "type": "object",
                "properties": {"reachable": {"type": "boolean"}},
                "required": ["reachable"],
                "additionalProperties": False,
            },
            "server": {
                "type": "object",
                "properties": {"total_requests": {"type": "integer", "minimum": 0}},
                "required": ["total_requests"],
                "additionalProperties": False,
            },
            "configuration_hash": {"type": ["string", "null"], "pattern": "^[0-9a-f]{32}$"},
            "config_version": {"type": ["integer", "null"], "minimum": 0},
        },
        "required": ["database", "server", "configuration_hash", "config_version"],
        "additionalProperties": False,
    }
    return {
        "summary": "Node status",
        "description": "200 even when PostgreSQL does not answer (`database.reachable` says so).",
        "responses": {"200": answer("The status.", schema)},
    }


def _ready(c: Components) -> Json:
    return {
        "summary": "Readiness probe",
        "responses": {
            "200": answer("PostgreSQL answers.", js.ref("Message")),
            "503": answer("PostgreSQL does not answer.", js.ref("Message")),
        },
    }


def _get_config(c: Components) -> Json:
    schema = {
        "type": "object",
        "properties": {"config": {"type": "string", "description": "The declarative config, as YAML."}},
        "required": ["config"],
        "additionalProperties": False,
    }
    return {
        "summary": "Export the whole config",
        "responses": {"200": answer("The config.", schema), "503": shared("Unavailable")},
    }


def _post_config(c: Components) -> Json:
    document = c.schema(
        "DeclarativeConfig",
        lambda: {
            "type": "object",
            "description": 'Kong\'s declarative format, nested or flat; or {"config": text or object}.',
            "properties": {
                "_format_version": {"type": "string"},
                "config": {"type": ["string", "object"], "description": "The document as YAML or JSON text."},
            },
        },
    )
    flattened = c.schema(
        "ConfigEntities",
        lambda: {
            "type": "object",
            "description": "Every entity of the new config, by kind and id.",
            "properties": {
                kind: {
                    "type": "object",
                    "additionalProperties": c.record(kind),
                }
                for kind in BY_NAME
            },
            "additionalProperties": False,
        },
    )
    text = {"schema": {"type": "string", "description": "The document as YAML or JSON."}}
    form_schema = {
        "type": "object",
        "properties": {"config": {"type": "string"}, "check_hash": {"type": "string"}},
        "required": ["config"],
    }
    content: Json = {
        JSON: {"schema": document},
        FORM: {"schema": form_schema},
        MULTIPART: {"schema": form_schema},
        **{media: text for media in TEXT_TYPES},
    }
    return {
        "summary": "Replace the whole config (one config version)",
        "parameters": [
            {
                "name": "check_hash",
                "in": "query",
                "description": "`1`: answer 304 when the document is the config already stored.",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {"required": True, "content": content},
        "responses": {
            "201": answer("Stored.", flattened),
            "304": answer("Unchanged (check_hash=1 and the same config)."),
            **error_answers(
                c,
                {DECLARATIVE_CONFIG, PRIMARY_KEY_VIOLATION, FOREIGN_KEY_VIOLATION},
                message=True,
                not_found=False,
                conflict=True,
                body=True,
            ),
        },
    }


def _tag_rows(c: Components) -> Json:
    row = c.schema(
        "TagRow",
        lambda: {
            "type": "object",
            "properties": {
                "entity_name": {"type": "string"},
                "entity_id": {"type": "string", "format": "uuid"},
                "tag": {"type": "string"},
            },
            "required": ["entity_name", "entity_id", "tag"],
            "additionalProperties": False,
        },
    )
    return c.schema("TagPage", lambda: js.page_schema(row, "A page of (tag, entity) rows."))


def _tags(c: Components) -> Json:
    return {
        "summary": "List every tag on every entity",
        "parameters": [param("size"), param("offset")],
        "responses": {
            "200": answer("A page of rows.", _tag_rows(c)),
            **error_answers(
                c, {INVALID_SIZE, INVALID_OFFSET}, message=False, not_found=False, conflict=False, body=False
            ),
        },
    }


def _one_tag(c: Components) -> Json:
    return {
        "summary": "List the entities with a tag",
        "parameters": [
            {
                "name": "tags",
                "in": "path",
                "required": True,
                "description": "One tag.",
                "schema": {"type": "string", "minLength": 1},
                "example": "billing",
            },
            param("size"),
            param("offset"),
        ],
        "responses": {
            "200": answer("A page of rows.", _tag_rows(c)),
            **error_answers(
                c,
                {INVALID_SIZE, INVALID_OFFSET, INVALID_UNIQUE},
                message=False,
                not_found=False,
                conflict=False,
                body=False,
            ),
        },
    }


def _enabled_plugins(c: Components) -> Json:
    schema = {
        "type": "object",
        "properties": {"enabled_plugins": {"type": "array", "items": {"type": "string"}}},
        "required": ["enabled_plugins"],
        "additionalProperties": False,
    }
    return {"summary": "Plugins this node can run", "responses": {"200": answer("Plugin names.", schema)}}


def _kong_schema(c: Components) -> Json:
    c.schema("KongField", lambda: js.KONG_FIELD)
    c.schema("KongFields", lambda: js.KONG_FIELDS)
    return c.schema("KongSchema", lambda: js.KONG_SCHEMA)


def _name_parameter(description: str, example: str) -> Json:
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
        "example": example,
    }


def _entity_schema(c: Components) -> Json:
    return {
        "summary": "An entity's schema, in Kong's format",
        "parameters": [_name_parameter("An entity kind.", "services")],
        "responses": {
            "200": answer("The schema.", _kong_schema(c)),
            "404": answer("No entity of that name.", js.ref("Message")),
        },
    }


def _plugin_schema(c: Components) -> Json:
    return {
        "summary": "A plugin's schema, in Kong's format",
        "parameters": [_name_parameter("An enabled plugin's name.", "key-auth")],
        "responses": {
            "200": answer("The schema.", _kong_schema(c)),
            "404": answer("No enabled plugin of that name.", js.ref("Message")),
        },
    }


def _validation_answers(c: Components, *, by_name: bool) -> Json:
    answers: Json = {
        "200": answer("Valid.", js.ref("Message")),
        "400": answer("Invalid.", c.errors({SCHEMA_VIOLATION}, message=True)),
    }
    if by_name:
        answers["404"] = answer("No entity of that name.", js.ref("Message"))
    return {**answers, "413": shared("PayloadTooLarge"), "415": shared("UnsupportedMediaType")}


def _validate_entity(c: Components) -> Json:
    schema: Json = {"type": "object", "description": "An entity of the kind in the path."}
    return {
        "summary": "Validate an entity without storing it",
        "parameters": [_name_parameter("An entity kind.", "services")],
        "requestBody": body(schema, schema, required=True),
        "responses": _validation_answers(c, by_name=True),
    }


def _validate_plugin(c: Components) -> Json:
    schema_ref, schema = c.write("plugins", "create")
    return {
        "summary": "Validate a plugin without storing it",
        "requestBody": body(schema_ref, schema, required=True),
        "responses": _validation_answers(c, by_name=False),
    }


def _endpoints(c: Components) -> Json:
    schema = {
        "type": "object",
        "properties": {"data": {"type": "array", "items": {"type": "string", "pattern": "^/"}}},
        "required": ["data"],
        "additionalProperties": False,
    }
    return {"summary": "Every path of this API", "responses": {"200": answer("Paths.", schema)}}


def _openapi(c: Components) -> Json:
    schema = {"type": "object", "required": ["openapi", "info", "paths"]}
    return {"summary": "This document", "responses": {"200": answer("The OpenAPI document.", schema)}}


def _data_planes(c: Components) -> Json:
    data_plane = c.schema(
        "DataPlane",
        lambda: {
            "type": "object",
            "description": "A data plane as its heartbeats and acks report it (Kong's fields, then ours).",
            "properties": {
                "id": {"type": "string"},
                "hostname": {"type": "string"},
                "ip": {"type": "string"},
                "version": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "config_hash": {"type": "string"},
                "sync_status": {"type": "string"},
                "last_seen": {"type": "integer"},
                "updated_at": {"type": "integer"},
                "ttl": {"type": "integer", "minimum": 0},
                "cert_details": {
                    "type": "object",
                    "properties": {"expiry_timestamp": {"type": ["integer", "null"]}},
                    "required": ["expiry_timestamp"],
                },
            },
            "required": [
                "id",
                "hostname",
                "ip",
                "version",
                "labels",
                "config_hash",
                "sync_status",
                "last_seen",
                "updated_at",
                "ttl",
                "cert_details",
            ],
        },
    )
    page = c.schema("DataPlanePage", lambda: js.page_schema(data_plane, "A page of data planes."))
    return {
        "summary": "The data planes of this cluster",
        "parameters": [param("size"), param("offset")],
        "responses": {
            "200": answer("A page.", page),
            **error_answers(
                c,
                {INVALID_SIZE, INVALID_OFFSET},
                message=False,
                not_found=True,  # on a node without a database
                conflict=False,
                body=False,
            ),
        },
    }


def _cluster_status(c: Components) -> Json:
    row = {
        "type": "object",
        "properties": {
            "config_hash": {"type": "string"},
            "hostname": {"type": "string"},
            "ip": {"type": "string"},
            "last_seen": {"type": "integer"},
        },
        "required": ["config_hash", "hostname", "ip", "last_seen"],
    }
    ok = answer("Data planes by id.", {"type": "object", "additionalProperties": row})
    ok["headers"] = {"Deprecation": {"description": "Always `true`.", "schema": {"type": "string"}}}
    return {
        "summary": "Data planes by id (deprecated: use /clustering/data-planes)",
        "deprecated": True,
        "responses": {"200": ok, "404": shared("NotFound"), "503": shared("Unavailable")},
    }


# (path, method) -> (OpenAPI tag, builder) for every endpoint that is not an entity route.
FIXED: Final[dict[tuple[str, str], tuple[str, Builder]]] = {
    ("/", "GET"): ("node", _root),
    ("/status", "GET"): ("node", _status),
    ("/status/ready", "GET"): ("node", _ready),
    ("/endpoints", "GET"): ("node", _endpoints),
    (DOCUMENT_PATH, "GET"): ("node", _openapi),
    ("/config", "GET"): ("config", _get_config),
    ("/config", "POST"): ("config", _post_config),
    ("/tags", "GET"): ("tags", _tags),
    ("/tags/{tags}", "GET"): ("tags", _one_tag),
    ("/plugins/enabled", "GET"): ("plugins", _enabled_plugins),
    ("/schemas/{name}", "GET"): ("schemas", _entity_schema),
    ("/schemas/{name}/validate", "POST"): ("schemas", _validate_entity),
    ("/schemas/plugins/{name}", "GET"): ("schemas", _plugin_schema),
    ("/schemas/plugins/validate", "POST"): ("schemas", _validate_plugin),
    ("/clustering/data-planes", "GET"): ("clustering", _data_planes),
    ("/clustering/status", "GET"): ("clustering", _cluster_status),
}
