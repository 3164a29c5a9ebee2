"""Kong's schema endpoints: ``/schemas/{entity}``, ``/schemas/{entity}/validate``, ``/schemas/plugins/...``.

``GET /schemas/{entity}`` renders the entity's fields as Kong's ``schema_to_jsonable`` does: a
``fields`` array of one-key objects, ``{name: {type, required, default, ...}}``, in schema order;
tools such as decK read the defaults from it. Field rules that live in validator functions are
shown where Kong has a key for them (``one_of``, ``between``, ``gt``, ``starts_with``, ``uuid``).

Until plugins have their own config schemas, ``/schemas/plugins/{name}`` answers for every
enabled plugin with the plugin entity's fields and ``config`` as a free-form record, and 404
(``No plugin named 'x'``) for any other name, as Kong does for a plugin it has not loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from zonegate.control_plane.admin_api.context import context
from zonegate.control_plane.admin_api.errors import json_response, message
from zonegate.control_plane.admin_api.routing import Routes
from zonegate.control_plane.admin_api.writes import arguments, fill_auto, validate
from zonegate.core.entities import BY_NAME
from zonegate.core.fields import MISSING, Field
from zonegate.core.schema import TIMESTAMP_FIELDS

VALIDATION_OK: Final = {"message": "schema validation successful"}
PLUGIN_SUBSCHEMA_FIELDS: Final = ("consumer", "route", "service", "protocols", "config")


def _closure(fn: Callable[..., Any]) -> dict[str, Any]:
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    if code is None:
        return {}
    return dict(zip(code.co_freevars, (cell.cell_contents for cell in cells), strict=False))


def _validator_rules(fn: Callable[..., Any]) -> dict[str, Any]:
    """Kong's keys for what the core's validator constructors (``fields.one_of`` ...) check."""
    owner = getattr(fn, "__qualname__", "").split(".", 1)[0]
    free = _closure(fn)
    if owner == "one_of" and "options" in free:
        return {"one_of": list(free["options"])}
    if owner == "between" and "low" in free:
        return {"between": [free["low"], free["high"]]}
    if owner == "gt" and "limit" in free:
        return {"gt": free["limit"]}
    if owner == "starts_with" and "prefix" in free:
        return {"starts_with": free["prefix"]}
    if owner == "is_uuid":
        return {"uuid": True}
    return {}


def field_json(name: str, spec: Field) -> dict[str, Any]:
    out: dict[str, Any] = {"type": spec.kind}
    if spec.kind == "foreign":
        out["reference"] = spec.reference
        out["on_delete"] = spec.on_delete
    if spec.required:
        out["required"] = True
    if spec.unique:
        out["unique"] = True
    if spec.auto:
        out["auto"] = True
        if name in TIMESTAMP_FIELDS:
            out["timestamp"] = True
    if spec.default is not MISSING:
        out["default"] = spec.default_value()
    if spec.len_min is not None:
        out["len_min"] = spec.len_min
    if spec.len_max is not None:
        out["len_max"] = spec.len_max
    for validator in spec.validators:
        out.update(_validator_rules(validator))
    if spec.elements is not None:
        out["elements"] = field_json("", spec.elements)
    if spec.keys is not None:
        out["keys"] = field_json("", spec.keys)
    if spec.values is not None:
        out["values"] = field_json("", spec.values)
    if spec.kind == "record":
        out["fields"] = [{sub: field_json(sub, sub_spec)} for sub, sub_spec in spec.fields]
    if spec.description:
        out["description"] = spec.description
    return out


def schema_json(kind: str, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    schema = BY_NAME[kind]
    fields = [{name: field_json(name, spec)} for name, spec in schema.fields if only is None or name in only]
    return {"fields": fields}


async def get_schema(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in BY_NAME:
        raise message(404, f"No entity named '{name}'")
    return json_response(schema_json(name))


async def _validate(request: web.Request, kind: str) -> web.Response:
    if kind not in BY_NAME:
        raise message(404, f"No entity named '{kind}'")
    ctx = context(request)
    data = await arguments(request, kind)
    data = {k: v for k, v in data.items() if k not in TIMESTAMP_FIELDS}
    fill_auto(BY_NAME[kind], data)  # Kong validates with the insert's auto fields filled in
    validate(ctx, kind, data, {})
    return json_response(VALIDATION_OK)


async def validate_entity(request: web.Request) -> web.Response:
    return await _validate(request, request.match_info["name"])


async def validate_plugin(request: web.Request) -> web.Response:
    return await _validate(request, "plugins")


async def plugin_schema(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in context(request).enabled_plugins:
        raise message(404, f"No plugin named '{name}'")
    return json_response(schema_json("plugins", PLUGIN_SUBSCHEMA_FIELDS))


async def enabled_plugins(request: web.Request) -> web.Response:
    return json_response({"enabled_plugins": list(context(request).enabled_plugins)})


def register(routes: Routes) -> None:
    routes.add("/plugins/enabled", {"GET": enabled_plugins})
    routes.add("/schemas/plugins/validate", {"POST": validate_plugin})
    routes.add("/schemas/plugins/{name}", {"GET": plugin_schema})
    routes.add("/schemas/{name}", {"GET": get_schema})
    routes.add("/schemas/{name}/validate", {"POST": validate_entity})
