"""``GET /config`` and ``POST /config``: the whole config as one declarative document.

Kong serves these on DB-less nodes only (``kong/api/routes/config.lua``); here a DB-less node
serves them too (``POST /config`` applies the config to its proxy and cache), and so does the
control plane, over PostgreSQL, which is how a batch of changes lands as one config version.

POST takes the document as the JSON body itself (an object with ``_format_version``), as a
``config`` argument (JSON, form or multipart, YAML or JSON text), or as a raw YAML/JSON body
(``application/yaml``, ``text/yaml``, ``text/plain``: an addition to Kong, which refuses those
media types). It validates everything first (Kong's code 14 body, every error located), then
replaces the store's content in one transaction. ``?check_hash=1`` answers 304 when the document
is the config already stored. Success is 201 with the entities, flattened by kind and id, as Kong.

Parsing, validating and hashing a large config takes long: it runs in a thread, so that the event
loop it shares with a DB-less node's proxy keeps serving traffic meanwhile (as a reload does).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aiohttp import web

from zonegate.control_plane.admin_api.arguments import Body, first, query_arguments, read_body, too_deep
from zonegate.control_plane.admin_api.context import AdminContext, StatusCache, context
from zonegate.control_plane.admin_api.errors import ApiError, json_response, message
from zonegate.control_plane.admin_api.routing import Routes
from zonegate.control_plane.exported import export_hash
from zonegate.control_plane.storable import find_unstorable, nested_error
from zonegate.core import declarative
from zonegate.core.config import Config
from zonegate.core.errors import ENTITY_KEY, DeclarativeConfigError

TEXT_TYPES: Final = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
NO_CONFIG: Final = "expected a declarative configuration"
TOO_DEEP: Final = "failed parsing declarative configuration: exceeded maximum nesting depth"


async def current_state(ctx: AdminContext) -> StatusCache:
    """The stored config's version and export hash, recomputed only when the version moved."""
    version = await ctx.store.config_version()
    cached = ctx.status_cache
    if cached is not None and cached.version == version:
        return cached
    if ctx.stored_hash is not None:
        ctx.status_cache = StatusCache(*await ctx.stored_hash.current())
    else:
        snapshot = await ctx.store.snapshot()
        ctx.status_cache = StatusCache(
            snapshot.version, await asyncio.to_thread(export_hash, snapshot.config)
        )
    return ctx.status_cache


async def get_config(request: web.Request) -> web.Response:
    config = await context(request).store.export()
    return json_response({"config": declarative.dumps(config)})


def _parsed(text: str) -> Any:
    """YAML or JSON text; nesting too deep to walk is a parse error (libyaml's words for its own limit)."""
    try:
        document = declarative.parse_text(text)
    except RecursionError:
        raise DeclarativeConfigError({ENTITY_KEY: [TOO_DEEP]}) from None
    if too_deep(document):
        raise DeclarativeConfigError({ENTITY_KEY: [TOO_DEEP]})
    return document


def _document(media: str, value: Any, raw: bytes) -> Any:
    """The declarative document a POST carries, parsed (``declarative.load`` validates it)."""
    if media == "json" and isinstance(value, dict) and "_format_version" in value:
        return value
    if media == "text":
        return _parsed(str(value))
    config = value.get("config") if isinstance(value, dict) else None
    if isinstance(config, dict):  # a multipart part sent as application/json
        return config
    if isinstance(config, str) and config.strip():
        return _parsed(config)
    if config is None and media == "json" and raw.strip():
        return value  # a JSON body without _format_version: load() says what is missing
    raise message(400, NO_CONFIG)


def _flattened(config: Config) -> dict[str, dict[str, Any]]:
    return {kind: {entity["id"]: entity for entity in entities} for kind, entities in config.entities.items()}


def _posted_config(body: Body) -> tuple[Config, str]:
    """The config a POST carries, validated, and its export hash (CPU-bound: call in a thread)."""
    document = _document(body.media, body.value, body.raw)
    if isinstance(document, dict):
        document = {k: v for k, v in document.items() if k not in ("check_hash", "flatten_errors")}
    unstorable = find_unstorable(document)
    if unstorable is not None:
        path, problem = unstorable
        fields = nested_error(path, problem) if path else {ENTITY_KEY: [problem]}
        raise DeclarativeConfigError(fields if isinstance(fields, dict) else {ENTITY_KEY: [problem]})
    config = declarative.load(document)  # the loader hashes clear basic-auth passwords, as Kong's
    return config, export_hash(config)


async def post_config(request: web.Request) -> web.Response:
    ctx = context(request)
    body = await read_body(request, text_types=TEXT_TYPES)
    args = body.value if isinstance(body.value, dict) else {}
    check_hash = str(first(query_arguments(request).get("check_hash", args.get("check_hash")))) == "1"
    if body.media == "json" and not isinstance(body.value, dict):
        raise message(400, NO_CONFIG)
    config, posted_hash = await asyncio.to_thread(_posted_config, body)
    if check_hash and posted_hash == (await current_state(ctx)).config_hash:
        raise ApiError(304, None)
    await ctx.store.replace_all(config)
    return json_response(_flattened(config), 201)


def register(routes: Routes) -> None:
    routes.add("/config", {"GET": get_config, "POST": post_config})
