"""Kong's node endpoints: ``/`` (node information), ``/status``, ``/status/ready``, ``/endpoints``.

``GET /`` has Kong's shape (``kong/api/routes/kong.lua``) without the Lua-specific parts
(``lua_version``, timers): version, hostname, the node id (persisted in the prefix), the plugins
this node has (name -> version and priority) and the distinct plugin names configured in the
cluster, and the node's settings with every secret masked as Kong masks them (``******``).

``GET /status`` reports whether PostgreSQL answers (``database.reachable``, Kong's field), and the
stored config's version and export hash (``configuration_hash``: what ``zonegate config hash``
prints for the file ``zonegate config db-export`` writes). It answers 200 even when the database
does not, as Kong's does; ``/status/ready`` is the probe that answers 503 then.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from zonegate import __version__
from zonegate.control_plane.admin_api.config_endpoint import current_state
from zonegate.control_plane.admin_api.context import StatusCache, context
from zonegate.control_plane.admin_api.errors import json_response
from zonegate.control_plane.admin_api.routing import Routes
from zonegate.control_plane.errors import StoreError
from zonegate.plugins.bundled import BUNDLED_PRIORITIES
from zonegate.settings import SETTING_SPECS, Listen, Settings

TAGLINE: Final = "Welcome to zonegate"
MASK: Final = "******"
PAGE: Final = 1000


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Path | Listen):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


def sanitized_configuration(settings: Settings) -> dict[str, Any]:
    """Every setting by name; secrets masked (Kong's ``remove_sensitive``)."""
    out: dict[str, Any] = {}
    for spec in SETTING_SPECS:
        value = getattr(settings, spec.name)
        out[spec.name] = (MASK if value is not None else None) if spec.sensitive else _jsonable(value)
    return out


async def _plugins_in_cluster(request: web.Request) -> list[str]:
    store = context(request).store
    names: set[str] = set()
    offset: str | None = None
    while True:
        page, offset = await store.page("plugins", PAGE, offset)
        names.update(p["name"] for p in page)
        if offset is None:
            return sorted(names)


async def root(request: web.Request) -> web.Response:
    ctx = context(request)
    return json_response(
        {
            "tagline": TAGLINE,
            "version": __version__,
            "edition": "community",
            "hostname": ctx.hostname,
            "node_id": ctx.node_id,
            "plugins": {
                "available_on_server": {
                    name: {"version": __version__, "priority": BUNDLED_PRIORITIES.get(name)}
                    for name in ctx.enabled_plugins
                },
                "enabled_in_cluster": await _plugins_in_cluster(request),
            },
            "configuration": sanitized_configuration(ctx.settings),
            "pids": {"master": os.getpid()},
        }
    )


async def status(request: web.Request) -> web.Response:
    ctx = context(request)
    reachable = True
    state: StatusCache | None
    try:
        state = await current_state(ctx)
    except StoreError:
        reachable = False
        state = ctx.status_cache
    return json_response(
        {
            "database": {"reachable": reachable},
            "server": {"total_requests": ctx.total_requests},
            "configuration_hash": state.config_hash if state is not None else None,
            "config_version": state.version if state is not None else None,
        }
    )


async def ready(request: web.Request) -> web.Response:
    try:
        await context(request).store.ping()
    except StoreError as exc:
        return json_response({"message": f"database unreachable: {exc}"}, 503)
    return json_response({"message": "ready"})


def register(routes: Routes) -> None:
    routes.add("/", {"GET": root})
    routes.add("/status", {"GET": status})
    routes.add("/status/ready", {"GET": ready})


def endpoints_handler(paths: list[str]) -> dict[str, Any]:
    """``GET /endpoints``: every path, sorted segment by segment as Kong sorts them."""

    async def handler(_: web.Request) -> web.Response:
        return json_response({"data": sorted(paths, key=lambda p: p.replace("/", "\x00"))})

    return {"GET": handler}
