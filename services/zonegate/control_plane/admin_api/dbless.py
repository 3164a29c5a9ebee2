"""The Admin API of a node without a database, as Kong serves it on a DB-less traditional node.

The same application as the control plane's (``app.build_app``, every endpoint and error shape),
over a ``ConfigStore``: reads answer from the config the node runs; entity writes answer 405 with
Kong's code 12 body (``cannot create 'services' entities when not using a database``); ``POST
/config`` validates a whole declarative config (400 with every error located, the running config
kept) and applies it exactly as a reload does: LMDB cache, then proxy. ``?check_hash=1`` answers
304 for the config already running.

Which nodes serve it follows Kong: a ``traditional`` node with ``database = off`` and a non-empty
``admin_listen``. A ``data_plane`` node never does, whatever ``admin_listen`` says: Kong's nginx
template has no Admin API server on a data plane, and ``admin_listen``'s default is not off, so
refusing the setting there would break every data plane started with defaults.

Two answers need the request as well as the error, so they are made here rather than in
``errors``: Kong names the field a write addressed the entity by (``cannot remove 'services'
entities by 'name' ...`` for ``DELETE /services/billing``), which only the URL knows; and a config
too large for the LMDB map is Kong's 413, an error only this kind of node has.
"""

from __future__ import annotations

from typing import Final

import lmdb
import structlog
from aiohttp import web

from zonegate.control_plane.admin_api.app import build_app
from zonegate.control_plane.admin_api.errors import message
from zonegate.control_plane.admin_api.listeners import start_admin_api
from zonegate.control_plane.admin_api.lookup import is_uuid
from zonegate.control_plane.admin_api.routing import Handler
from zonegate.control_plane.config_store import ActiveConfig, ConfigStore
from zonegate.control_plane.errors import OperationUnsupported
from zonegate.core.entities import BY_NAME
from zonegate.settings import Settings

log = structlog.get_logger(__name__)

CONFIG_TOO_LARGE: Final = (
    'Configuration does not fit in LMDB database, consider raising the "lmdb_map_size" config for Zonegate'
)
# Kong finds a target by ``host:port`` under its upstream, then writes it by id: its refusal names
# no field (``kong/api/routes/upstreams.lua``). Certificates and ACLs have no endpoint key at all.
_RESOLVED_TO_ID: Final = frozenset({"targets"})


def serves_admin_api(settings: Settings) -> bool:
    """Kong's rule: the Admin API runs on a traditional node, never on a data plane."""
    return settings.role == "traditional" and settings.database == "off" and bool(settings.admin_listen)


def addressed_by(kind: str, key: str | None) -> str | None:
    """The field a URL key names an entity by (``name`` for ``/services/billing``), None for an id."""
    if key is None or is_uuid(key) or kind in _RESOLVED_TO_ID:
        return None
    return BY_NAME[kind].endpoint_key


@web.middleware
async def dbless_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OperationUnsupported as exc:
        field = addressed_by(exc.kind, request.match_info.get(exc.kind)) if exc.by is None else None
        if field is not None:
            raise exc.by_field(field) from None
        raise
    except lmdb.MapFullError:
        log.error("config.too_large_for_cache", hint="raise ZONEGATE_LMDB_MAP_SIZE")
        raise message(413, CONFIG_TOO_LARGE) from None


def build_dbless_app(source: ActiveConfig, settings: Settings, *, node_id: str) -> web.Application:
    return build_app(ConfigStore(source), settings, node_id=node_id, middlewares=[dbless_errors])


async def start_dbless_admin_api(
    source: ActiveConfig, settings: Settings, *, node_id: str, grace: float
) -> web.AppRunner:
    """Serve the DB-less Admin API on every ``admin_listen`` entry until ``runner.cleanup()``."""
    app = build_dbless_app(source, settings, node_id=node_id)
    return await start_admin_api(app, settings, grace=grace)
