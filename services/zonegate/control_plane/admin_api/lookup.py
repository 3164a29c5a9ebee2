"""Finding entities by URL key, and showing them as Kong does.

A URL key is an id or, where the kind has one, its endpoint key (a service's name, a target's
``host:port``, a key-auth's key); under a parent, an ACL is found by its group and an entity
that belongs to another parent is not found. A certificate is also found by one of its SNI names
and is shown with the sorted names of its SNIs (Kong's ``snis`` pseudo-field).
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

from zonegate.control_plane.admin_api.arguments import infer_value
from zonegate.control_plane.admin_api.context import AdminContext
from zonegate.control_plane.admin_api.errors import invalid_primary_key, message, not_found
from zonegate.control_plane.admin_api.store_port import EntityReader
from zonegate.core.entities import BY_NAME
from zonegate.core.entities.targets import DEFAULT_TARGET_PORT
from zonegate.core.fields import UUID_RE
from zonegate.core.net import HostError, parse_host_port
from zonegate.core.schema import Entity

LIST_ALL: Final = 1000
SNI_NOT_FOUND: Final = "SNI not found"

Parent = tuple[str, str]  # (the child's foreign key field, the parent's id)


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and UUID_RE.match(value) is not None


# -- finding entities ----------------------------------------------------------------------------------


def lookup_field(kind: str, scoped: bool) -> str | None:
    """The field a non-UUID URL key names: the endpoint key, or an ACL's group under its consumer."""
    schema = BY_NAME[kind]
    if schema.endpoint_key is not None:
        return schema.endpoint_key
    if kind == "acls" and scoped:
        return "group"
    return None


def key_value(kind: str, field: str, key: str) -> Any:
    """The URL key typed like the field (Kong's ``infer_value``); targets get their default port."""
    value = infer_value(key, BY_NAME[kind].field(field))
    if kind == "targets" and field == "target" and isinstance(value, str):
        with contextlib.suppress(HostError):  # a bad target is the schema's to report
            value = parse_host_port(value).render(DEFAULT_TARGET_PORT)
    return value


async def certificate_by_sni(store: EntityReader, name: str) -> Entity | None:
    if "\x00" in name:
        return None
    sni = await store.get_by_key("snis", name)
    if sni is None:
        return None
    return await store.get("certificates", sni["certificate"]["id"])


async def find(ctx: AdminContext, kind: str, key: str, parent: Parent | None = None) -> Entity | None:
    """The entity a URL key names (id or endpoint key), and under ``parent`` only if it belongs there."""
    store = ctx.store
    entity: Entity | None
    if "\x00" in key:
        return None  # PostgreSQL text holds no NUL: nothing can have this key
    if is_uuid(key):
        entity = await store.get(kind, key.lower())
    elif kind == "certificates":
        entity = await certificate_by_sni(store, key)
        if entity is None:
            raise message(404, SNI_NOT_FOUND)
    else:
        field = lookup_field(kind, parent is not None)
        if field is None:
            raise invalid_primary_key({"id": "expected a valid UUID"})
        value = key_value(kind, field, key)
        if not isinstance(value, str):
            return None
        scoped = parent is not None and not BY_NAME[kind].field(field).unique
        entity = await store.get_by_key(kind, value, field=field, foreign=parent if scoped else None)
    if entity is not None and parent is not None:
        fk, parent_id = parent
        reference = entity.get(fk)
        if not isinstance(reference, dict) or reference.get("id") != parent_id:
            return None
    return entity


async def find_or_404(ctx: AdminContext, kind: str, key: str, parent: Parent | None = None) -> Entity:
    entity = await find(ctx, kind, key, parent)
    if entity is None:
        raise not_found()
    return entity


# -- presenting ----------------------------------------------------------------------------------------


async def children(store: EntityReader, kind: str, fk: str, parent_id: str) -> list[Entity]:
    found: list[Entity] = []
    offset: str | None = None
    while True:
        page, offset = await store.page(kind, LIST_ALL, offset, foreign=(fk, parent_id))
        found.extend(page)
        if offset is None:
            return found


async def sni_names(store: EntityReader, certificate_id: str) -> list[str]:
    return sorted(s["name"] for s in await children(store, "snis", "certificate", certificate_id))


async def present(ctx: AdminContext, kind: str, entity: Entity) -> Entity:
    """An entity as Kong shows it: as stored, and a certificate with the names of its SNIs."""
    if kind == "certificates":
        return {**entity, "snis": await sni_names(ctx.store, entity["id"])}
    return entity
