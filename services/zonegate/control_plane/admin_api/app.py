"""The Admin API application: Kong's endpoints over the control plane's store.

``build_app`` is the composition root of the API: it takes the opened store (PostgreSQL on a
control plane, the active config on a DB-less node: see ``store_port``) and the settings,
registers every endpoint family (node, config, tags, schemas, entities, in that order so that
fixed paths like ``/plugins/enabled`` win over ``/plugins/{id}``; then ``/openapi.json``, which
describes them all, and ``/endpoints``, which lists them) and wraps them in three
middlewares, outermost first: the access log (one line per request), the error mapping (every
failure becomes a Kong-shaped body, see ``errors``), and the admin token check when one is set.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from typing import Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from zonegate.control_plane.admin_api import (
    clustering,
    config_endpoint,
    entities,
    kong_root,
    openapi,
    schemas,
    tags,
)
from zonegate.control_plane.admin_api.auth import token_middleware
from zonegate.control_plane.admin_api.context import ADMIN, AdminContext
from zonegate.control_plane.admin_api.errors import (
    METHOD_NOT_ALLOWED_BODY,
    NOT_FOUND_BODY,
    UNEXPECTED_BODY,
    from_exception,
    json_response,
)
from zonegate.control_plane.admin_api.routing import Handler, Routes
from zonegate.control_plane.admin_api.store_port import AdminStore
from zonegate.control_plane.exported import StoredExportHash
from zonegate.control_plane.store import Store
from zonegate.plugins.bundled import enabled_plugins
from zonegate.settings import Settings

log = structlog.get_logger(__name__)

# Kong's nginx_admin_client_max_body_size is 10m; a whole config through POST /config needs more.
MAX_BODY: Final = 64 * 1024 * 1024


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    request.app[ADMIN].total_requests += 1
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        log.info(
            "admin.request",
            method=request.method,
            path=request.path,
            status=status,
            ms=round((time.monotonic() - started) * 1000, 1),
        )


@web.middleware
async def error_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        # Raised by aiohttp itself: routing (404, 405) and body limits (413).
        if exc.status == 404:
            return json_response(NOT_FOUND_BODY, 404)
        if exc.status == 405:
            return json_response(METHOD_NOT_ALLOWED_BODY, 405)
        if exc.status == 413:
            return json_response({"message": "Payload too large"}, 413)
        if exc.status < 400:
            raise
        return json_response({"message": exc.reason}, exc.status)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        answer = from_exception(exc)
        if answer is None:
            log.exception("admin.unexpected_error", method=request.method, path=request.path)
            return json_response(UNEXPECTED_BODY, 500)
        return answer.response()


def build_app(
    store: AdminStore,
    settings: Settings,
    *,
    node_id: str,
    hostname: str | None = None,
    middlewares: Sequence[Middleware] = (),
) -> web.Application:
    """The Admin API over ``store``; ``middlewares`` run innermost, after the token check."""
    context = AdminContext(
        store=store,
        settings=settings,
        enabled_plugins=enabled_plugins(settings.plugins),
        node_id=node_id,
        hostname=hostname or socket.gethostname(),
        stored_hash=StoredExportHash(store) if isinstance(store, Store) else None,
    )
    chain: list[Middleware] = [access_log, error_bodies]
    if settings.admin_token:
        chain.append(token_middleware(settings.admin_token))
    chain.extend(middlewares)
    app = web.Application(middlewares=chain, client_max_size=MAX_BODY)
    app[ADMIN] = context
    routes = Routes()
    kong_root.register(routes)
    config_endpoint.register(routes)
    tags.register(routes)
    schemas.register(routes)
    entities.register(routes)
    if settings.is_control_plane:  # as Kong: only a control plane has data planes to list
        clustering.register(routes)
    openapi.register(routes)
    routes.add("/endpoints", kong_root.endpoints_handler([*routes.paths(), "/endpoints"]))
    routes.install(app)
    return app
