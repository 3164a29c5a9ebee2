"""Kong's generated entity endpoints, for every entity kind (``kong/api/endpoints.lua``).

For each kind: ``/{kinds}`` (GET a page, POST) and ``/{kinds}/{id or endpoint key}`` (GET, PUT
upsert, PATCH, DELETE). For each foreign key ``fk`` of a kind pointing at ``parents``:
``/{kinds}/{key}/{fk}`` (the parent of one entity), ``/{parents}/{key}/{kinds}`` (the children of
one parent; POST sets the foreign key from the URL) and ``/{parents}/{key}/{kinds}/{key}`` (one
child, 404 unless it belongs to that parent). Kong's exceptions are kept: no top-level
``/targets`` (targets live under their upstream, found by id or ``host:port``), credentials
nested under consumers as ``key-auth``, ``basic-auth``, ``jwt`` and ``acls`` (an ACL found by its
group), certificates found by one of their SNI names and carrying a ``snis`` list of names.

Behaviour kept from Kong: DELETE answers 204 whether or not the entity existed (404 only under
a parent); PUT creates or replaces, the id or name in the URL winning over the body's; a PUT on
``/routes/{route}/service`` for a route without one creates the service, then points the route
at it (two writes). Finding entities is ``lookup``'s job, writing them ``writes``'.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from aiohttp import web

from zonegate.control_plane.admin_api.arguments import first, query_arguments
from zonegate.control_plane.admin_api.context import AdminContext, context
from zonegate.control_plane.admin_api.errors import json_response, message, method_not_allowed, not_found
from zonegate.control_plane.admin_api.lookup import Parent, find, find_or_404, is_uuid, present
from zonegate.control_plane.admin_api.pagination import next_link, page_body, parse_page_query
from zonegate.control_plane.admin_api.routing import Handler, Routes
from zonegate.control_plane.admin_api.writes import arguments, create, put_by_key, update, upsert
from zonegate.core.entities import BY_NAME, KINDS
from zonegate.core.schema import Entity

# Kong's ``admin_api_name`` of each kind (the DB name where there is none).
COLLECTION_PATHS: Final[dict[str, str]] = {
    "certificates": "certificates",
    "snis": "snis",
    "ca_certificates": "ca_certificates",
    "services": "services",
    "routes": "routes",
    "consumers": "consumers",
    "upstreams": "upstreams",
    "targets": "targets",
    "plugins": "plugins",
    "keyauth_credentials": "key-auths",
    "basicauth_credentials": "basic-auths",
    "jwt_secrets": "jwts",
    "acls": "acls",
}
# Kong's ``admin_api_nested_name``: how a kind is named under its parent.
NESTED_PATHS: Final[dict[str, str]] = {
    "keyauth_credentials": "key-auth",
    "basicauth_credentials": "basic-auth",
    "jwt_secrets": "jwt",
}
CREDENTIALS: Final = frozenset({"keyauth_credentials", "basicauth_credentials", "jwt_secrets", "acls"})
# Kong disables every top-level targets endpoint ("use /upstreams/{upstream}/targets instead").
NO_TOP_LEVEL: Final = frozenset({"targets"})


# -- handlers: collections ------------------------------------------------------------------------------


def list_handler(kind: str) -> Handler:
    path = f"/{COLLECTION_PATHS[kind]}"
    has_tags = BY_NAME[kind].has_field("tags")

    async def handler(request: web.Request) -> web.Response:
        ctx = context(request)
        query = query_arguments(request)
        if kind == "consumers" and "custom_id" in query:
            return await _consumer_by_custom_id(ctx, first(query["custom_id"]))
        page = parse_page_query(query, tags=has_tags)
        entities, offset = await ctx.store.page(
            kind, page.size, page.offset, tags_all=page.tags_all, tags_any=page.tags_any
        )
        data = [await present(ctx, kind, e) for e in entities]
        return json_response(page_body(data, offset, next_link(path, offset, page)))

    return handler


async def _consumer_by_custom_id(ctx: AdminContext, custom_id: Any) -> web.Response:
    """Kong's ``GET /consumers?custom_id=``: the one consumer with that custom_id, as a page."""
    if not isinstance(custom_id, str) or custom_id == "":
        raise message(400, "custom_id must be an unempty string")
    found = (
        None if "\x00" in custom_id else await ctx.store.get_by_key("consumers", custom_id, field="custom_id")
    )
    return json_response({"data": [found] if found is not None else [], "next": None})


def create_handler(kind: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        ctx = context(request)
        return json_response(await create(ctx, kind, await arguments(request, kind)), 201)

    return handler


# -- handlers: one entity --------------------------------------------------------------------------------


def entity_handlers(kind: str) -> dict[str, Handler]:
    async def get(request: web.Request) -> web.Response:
        ctx = context(request)
        entity = await find_or_404(ctx, kind, request.match_info[kind])
        return json_response(await present(ctx, kind, entity))

    async def put(request: web.Request) -> web.Response:
        ctx = context(request)
        args = await arguments(request, kind)
        return json_response(await put_by_key(ctx, kind, request.match_info[kind], args))

    async def patch(request: web.Request) -> web.Response:
        ctx = context(request)
        existing = await find_or_404(ctx, kind, request.match_info[kind])
        return json_response(await update(ctx, kind, existing, await arguments(request, kind)))

    async def delete(request: web.Request) -> web.Response:
        ctx = context(request)
        key = request.match_info[kind]
        if is_uuid(key):
            await ctx.store.delete(kind, key.lower())
        else:
            entity = await find(ctx, kind, key)
            if entity is not None:
                await ctx.store.delete(kind, entity["id"])
        return web.Response(status=204)

    return {"GET": get, "PUT": put, "PATCH": patch, "DELETE": delete}


# -- handlers: through a foreign key ---------------------------------------------------------------------


def foreign_entity_handlers(kind: str, fk: str, reference: str, *, read_only: bool) -> dict[str, Handler]:
    """``/routes/{route}/service``: the entity a foreign key points at."""

    async def referenced(ctx: AdminContext, request: web.Request) -> tuple[Entity, str | None]:
        entity = await find_or_404(ctx, kind, request.match_info[kind])
        pointer = entity.get(fk)
        return entity, pointer["id"] if isinstance(pointer, dict) else None

    async def get(request: web.Request) -> web.Response:
        ctx = context(request)
        _, reference_id = await referenced(ctx, request)
        target = await ctx.store.get(reference, reference_id) if reference_id else None
        if target is None:
            raise not_found()
        return json_response(await present(ctx, reference, target))

    async def patch(request: web.Request) -> web.Response:
        ctx = context(request)
        _, reference_id = await referenced(ctx, request)
        target = await ctx.store.get(reference, reference_id) if reference_id else None
        if target is None:
            raise not_found()
        return json_response(await update(ctx, reference, target, await arguments(request, reference)))

    async def put(request: web.Request) -> web.Response:
        ctx = context(request)
        entity, reference_id = await referenced(ctx, request)
        args = await arguments(request, reference)
        associate = reference_id is None
        args["id"] = reference_id or str(uuid.uuid4())
        existing = await ctx.store.get(reference, args["id"]) if not associate else None
        stored = await upsert(ctx, reference, args, by="id", existing=existing)
        if associate:
            schema = BY_NAME[kind]
            await ctx.store.patch(
                kind, entity["id"], lambda c: schema.validate({**c, fk: {"id": stored["id"]}})
            )
        return json_response(stored)

    async def delete(request: web.Request) -> web.Response:
        ctx = context(request)
        _, reference_id = await referenced(ctx, request)
        if reference_id is None:
            raise not_found()
        raise method_not_allowed()

    if read_only:
        return {"GET": get}
    return {"GET": get, "PUT": put, "PATCH": patch, "DELETE": delete}


def nested_collection_handlers(kind: str, fk: str, reference: str) -> dict[str, Handler]:
    """``/services/{service}/routes``: one parent's children; POST sets the foreign key."""
    nested = NESTED_PATHS.get(kind, COLLECTION_PATHS[kind])
    has_tags = BY_NAME[kind].has_field("tags")

    async def get(request: web.Request) -> web.Response:
        ctx = context(request)
        key = request.match_info[reference]
        parent = await find_or_404(ctx, reference, key)
        page = parse_page_query(query_arguments(request), tags=has_tags)
        entities, offset = await ctx.store.page(
            kind,
            page.size,
            page.offset,
            tags_all=page.tags_all,
            tags_any=page.tags_any,
            foreign=(fk, parent["id"]),
        )
        data = [await present(ctx, kind, e) for e in entities]
        link = next_link(f"/{COLLECTION_PATHS[reference]}/{key}/{nested}", offset)
        return json_response(page_body(data, offset, link))

    async def post(request: web.Request) -> web.Response:
        ctx = context(request)
        parent = await find_or_404(ctx, reference, request.match_info[reference])
        args = await arguments(request, kind)
        args[fk] = {"id": parent["id"]}
        return json_response(await create(ctx, kind, args), 201)

    return {"GET": get, "POST": post}


def nested_entity_handlers(kind: str, fk: str, reference: str) -> dict[str, Handler]:
    """``/services/{service}/routes/{route}``: one child, and only if it belongs to that parent."""

    async def parent_of(ctx: AdminContext, request: web.Request) -> Parent:
        parent = await find_or_404(ctx, reference, request.match_info[reference])
        return fk, parent["id"]

    async def get(request: web.Request) -> web.Response:
        ctx = context(request)
        entity = await find_or_404(ctx, kind, request.match_info[kind], await parent_of(ctx, request))
        return json_response(await present(ctx, kind, entity))

    async def put(request: web.Request) -> web.Response:
        ctx = context(request)
        parent = await parent_of(ctx, request)
        args = await arguments(request, kind)
        return json_response(await put_by_key(ctx, kind, request.match_info[kind], args, parent))

    async def patch(request: web.Request) -> web.Response:
        ctx = context(request)
        existing = await find_or_404(ctx, kind, request.match_info[kind], await parent_of(ctx, request))
        return json_response(await update(ctx, kind, existing, await arguments(request, kind)))

    async def delete(request: web.Request) -> web.Response:
        ctx = context(request)
        existing = await find_or_404(ctx, kind, request.match_info[kind], await parent_of(ctx, request))
        await ctx.store.delete(kind, existing["id"])
        return web.Response(status=204)

    return {"GET": get, "PUT": put, "PATCH": patch, "DELETE": delete}


# -- the route table --------------------------------------------------------------------------------------


def register(routes: Routes) -> None:
    for kind in KINDS:
        if kind in NO_TOP_LEVEL:
            continue
        path = f"/{COLLECTION_PATHS[kind]}"
        routes.add(path, {"GET": list_handler(kind), "POST": create_handler(kind)})
        routes.add(f"{path}/{{{kind}}}", entity_handlers(kind))
    for kind in KINDS:
        nested = NESTED_PATHS.get(kind, COLLECTION_PATHS[kind])
        for fk, spec in BY_NAME[kind].foreign_keys():
            reference = spec.reference
            parent_path = f"/{COLLECTION_PATHS[reference]}/{{{reference}}}/{nested}"
            if kind not in NO_TOP_LEVEL:
                routes.add(
                    f"/{COLLECTION_PATHS[kind]}/{{{kind}}}/{fk}",
                    foreign_entity_handlers(kind, fk, reference, read_only=kind in CREDENTIALS),
                )
            collection = nested_collection_handlers(kind, fk, reference)
            if kind == "targets":
                # Kong 3 keeps ``/targets/all`` as the same listing (it once included deleted ones).
                routes.add(f"{parent_path}/all", {"GET": collection["GET"]})
            routes.add(parent_path, collection)
            routes.add(f"{parent_path}/{{{kind}}}", nested_entity_handlers(kind, fk, reference))
