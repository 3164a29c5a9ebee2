"""Entity writes as Kong's DAO does them: insert, upsert (PUT), update (PATCH).

Before validation a write drops client timestamps, splits off the certificates' ``snis``
shorthand, resolves foreign keys given by a unique field (``{"service": {"name": "billing"}}``,
Kong's code 13 when nothing matches) and, on insert and upsert, generates the ``auto`` keys and
secrets. Validation adds Kong's plugin rule (the name must be an enabled plugin) to the schema's.
Basic-auth passwords become digests (see ``control_plane.credentials``). PATCH merges records
field by field, inside the store's read-modify-write transaction.

Writes that touch several entities (a certificate and its SNIs) are sequences of single-entity
store writes: each one is atomic, the sequence is not.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final, Literal

from aiohttp import web

from zonegate.control_plane import credentials, storable
from zonegate.control_plane.admin_api.arguments import entity_arguments
from zonegate.control_plane.admin_api.context import AdminContext
from zonegate.control_plane.admin_api.errors import (
    foreign_keys_unresolved,
    invalid_primary_key,
    schema_violation,
)
from zonegate.control_plane.admin_api.lookup import (
    Parent,
    certificate_by_sni,
    children,
    find,
    is_uuid,
    key_value,
    lookup_field,
    present,
)
from zonegate.core import fields as f
from zonegate.core.entities import BY_NAME
from zonegate.core.errors import SchemaViolation
from zonegate.core.fields import Field
from zonegate.core.schema import TIMESTAMP_FIELDS, Entity, EntitySchema

PLUGIN_NOT_ENABLED: Final = "plugin '{}' not enabled; add it to the 'plugins' configuration property"
# The ``snis`` shorthand of certificates: SNI names, each validated as an SNI's name.
SNIS_SHORTHAND: Final[Field] = f.array(BY_NAME["snis"].field("name"))

Mode = Literal["insert", "upsert", "update"]


def _extra_fields(kind: str) -> dict[str, Field] | None:
    return {"snis": SNIS_SHORTHAND} if kind == "certificates" else None


async def arguments(request: web.Request, kind: str) -> dict[str, Any]:
    """The body of a write to ``kind``, typed from its schema."""
    return await entity_arguments(request, BY_NAME[kind], _extra_fields(kind))


# -- preparing writes ------------------------------------------------------------------------------------


async def resolve_foreign(ctx: AdminContext, schema: EntitySchema, args: dict[str, Any]) -> None:
    """Replace ``{"name": "x"}``-style foreign keys by ``{"id": ..}`` (Kong's ``resolve_foreign``)."""
    unresolved: dict[str, dict[str, tuple[str, Any, str]]] = {}
    for name, spec in schema.foreign_keys():
        value = args.get(name)
        if not isinstance(value, dict) or (is_uuid(value.get("id")) and len(value) == 1):
            continue
        reference = BY_NAME[spec.reference]
        candidates = [
            (field, value[field])
            for field in value
            if field != "id"
            and reference.has_field(field)
            and (reference.field(field).unique or reference.endpoint_key == field)
            and isinstance(value[field], str)
        ]
        errors: dict[str, tuple[str, Any, str]] = {}
        for field, wanted in candidates:
            found = await ctx.store.get_by_key(spec.reference, wanted, field=field)
            if found is not None:
                args[name] = {"id": found["id"]}
                errors = {}
                break
            errors[field] = (field, wanted, spec.reference)
        if errors:
            unresolved[name] = errors
    if unresolved:
        raise foreign_keys_unresolved(unresolved)


def fill_auto(schema: EntitySchema, args: dict[str, Any]) -> None:
    """Generate what Kong generates on insert and upsert: keys and secrets marked ``auto``."""
    for name, spec in schema.fields:
        if spec.auto and spec.kind == "string" and name != "id" and args.get(name) is None:
            args[name] = credentials.random_secret()


def snis_list(value: Any) -> list[Any]:
    """The ``snis`` shorthand: a list, a comma-separated string (Kong's old form), or null for none."""
    if value is None:
        return []
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    if isinstance(value, list):
        return list(value)
    return [value]


async def check_snis(
    ctx: AdminContext, names: list[Any] | None, certificate_id: str | None
) -> dict[str, Any]:
    """Kong's checks of a certificate's SNI names: each valid, none twice, none another's."""
    if names is None:
        return {}
    spec = BY_NAME["snis"].field("name")
    element_errors = [
        spec.validate(name)[1] if name is not None else "required field missing" for name in names
    ]
    if any(error is not None for error in element_errors):
        return {"snis": element_errors}
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return {"snis": f"{name} is duplicated"}
        seen.add(name)
    for name in names:
        sni = await ctx.store.get_by_key("snis", name)
        if sni is not None and sni["certificate"]["id"] != certificate_id:
            return {
                "snis": f"{name} already associated with existing certificate '{sni['certificate']['id']}'"
            }
    return {}


async def sync_snis(ctx: AdminContext, certificate_id: str, names: list[str]) -> None:
    """Make ``names`` the SNIs of the certificate: drop the others, add the missing ones."""
    store = ctx.store
    current = await children(store, "snis", "certificate", certificate_id)
    for sni in current:
        if sni["name"] not in names:
            await store.delete("snis", sni["id"])
    have = {sni["name"] for sni in current}
    schema = BY_NAME["snis"]
    for name in names:
        if name not in have:
            await store.insert("snis", schema.validate({"name": name, "certificate": {"id": certificate_id}}))


def validate(
    ctx: AdminContext, kind: str, data: Mapping[str, Any], extra_errors: Mapping[str, Any]
) -> Entity:
    entity, errors = BY_NAME[kind].check(data)
    errors.update(extra_errors)
    if kind == "plugins":
        name = data.get("name")
        if isinstance(name, str) and "name" not in errors and name not in ctx.enabled_plugins:
            errors["name"] = PLUGIN_NOT_ENABLED.format(name)
    if errors:
        raise SchemaViolation(errors)
    return entity


async def prepare(
    ctx: AdminContext, kind: str, args: Mapping[str, Any], mode: Mode
) -> tuple[dict[str, Any], list[Any] | None]:
    """The body of a write, before validation: timestamps dropped, shorthand split off, keys resolved."""
    schema = BY_NAME[kind]
    data = {k: v for k, v in args.items() if k not in TIMESTAMP_FIELDS}
    if mode == "update":
        data.pop("id", None)
    snis = snis_list(data.pop("snis")) if kind == "certificates" and "snis" in data else None
    await resolve_foreign(ctx, schema, data)
    if mode != "update":
        fill_auto(schema, data)
    return data, snis


def merge_values(
    specs: Mapping[str, Field] | None, bottom: Mapping[str, Any], top: Mapping[str, Any]
) -> dict[str, Any]:
    """PATCH: ``top`` over ``bottom``, records merged field by field (Kong's ``merge_values``).

    ``specs`` None is a free-form record (a plugin's config today): every object in it merges.
    """
    out = dict(bottom)
    for key, value in top.items():
        current = out.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            if specs is None:
                out[key] = merge_values(None, current, value)
                continue
            spec = specs.get(key)
            if spec is not None and spec.kind == "record":
                out[key] = merge_values(dict(spec.fields) if spec.fields else None, current, value)
                continue
        out[key] = value
    return out


# -- writes ------------------------------------------------------------------------------------------------


async def create(ctx: AdminContext, kind: str, args: Mapping[str, Any]) -> Entity:
    data, snis = await prepare(ctx, kind, args, "insert")
    extra = await check_snis(ctx, snis, None)
    entity = validate(ctx, kind, data, extra)
    if kind == credentials.BASICAUTH:
        entity = credentials.hash_new_password(entity, None)
    stored = await ctx.store.insert(kind, entity)
    if snis is not None:
        await sync_snis(ctx, stored["id"], snis)
    return await present(ctx, kind, stored)


async def upsert(
    ctx: AdminContext, kind: str, args: Mapping[str, Any], *, by: str, existing: Entity | None
) -> Entity:
    data, snis = await prepare(ctx, kind, args, "upsert")
    certificate_id = existing["id"] if existing is not None else data.get("id")
    extra = await check_snis(ctx, snis, certificate_id if isinstance(certificate_id, str) else None)
    entity = validate(ctx, kind, data, extra)
    if kind == credentials.BASICAUTH:
        entity = credentials.hash_new_password(entity, existing)
    stored = await ctx.store.upsert(kind, entity, by=by)
    if snis is not None:
        await sync_snis(ctx, stored["id"], snis)
    return await present(ctx, kind, stored)


async def update(ctx: AdminContext, kind: str, existing: Entity, args: Mapping[str, Any]) -> Entity:
    data, snis = await prepare(ctx, kind, args, "update")
    extra = await check_snis(ctx, snis, existing["id"])
    schema = BY_NAME[kind]

    def change(current: Entity) -> Entity:
        merged = merge_values(dict(schema.fields), current, data)
        entity = validate(ctx, kind, merged, extra)
        if kind == credentials.BASICAUTH and "password" in data:
            entity = credentials.hash_new_password(entity, current)
        return entity

    stored = await ctx.store.patch(kind, existing["id"], change)
    if snis is not None:
        await sync_snis(ctx, stored["id"], snis)
    return await present(ctx, kind, stored)


async def put_by_key(
    ctx: AdminContext, kind: str, key: str, args: dict[str, Any], parent: Parent | None = None
) -> Entity:
    """PUT ``/{kinds}/{key}``: the key (an id, a name, a certificate's SNI) decides what is replaced."""
    store = ctx.store
    if parent is not None:
        args[parent[0]] = {"id": parent[1]}
    if is_uuid(key):
        args["id"] = key.lower()
        existing = await store.get(kind, args["id"])
        return await upsert(ctx, kind, args, by="id", existing=existing)
    if kind == "certificates":
        existing = await certificate_by_sni(store, key)
        args["id"] = existing["id"] if existing is not None else str(uuid.uuid4())
        if existing is None:
            # A new certificate named by an SNI in the URL serves that SNI (Kong's prepare_params).
            names = snis_list(args.get("snis")) if "snis" in args else []
            args["snis"] = names if key in names else [*names, key]
        return await upsert(ctx, kind, args, by="id", existing=existing)
    field = lookup_field(kind, parent is not None)
    if field is None:
        raise invalid_primary_key({"id": "expected a valid UUID"})
    if "\x00" in key:
        raise schema_violation({field: storable.NUL})
    args[field] = key_value(kind, field, key)
    existing = await find(ctx, kind, key, parent) if isinstance(args[field], str) else None
    if existing is not None:
        args.setdefault("id", existing["id"])
    return await upsert(ctx, kind, args, by=field, existing=existing)
