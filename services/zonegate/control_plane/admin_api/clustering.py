"""Kong's ``/clustering`` endpoints on the control plane: which data planes run what.

``GET /clustering/data-planes`` pages through the rows the collector writes from heartbeats and
acks, with Kong's fields (``id``, ``hostname``, ``ip``, ``version``, ``labels``, ``config_hash``,
``sync_status``, ``last_seen``, ``updated_at``, ``ttl``, ``cert_details.expiry_timestamp``) plus
ours (``config_version`` applied, ``config_rejected`` with the refused version and why).
``GET /clustering/status`` is Kong's deprecated map ``{id: {config_hash, hostname, ip,
last_seen}}`` with its ``Deprecation: true`` header.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from zonegate.control_plane import data_planes
from zonegate.control_plane.admin_api.context import context
from zonegate.control_plane.admin_api.errors import json_response
from zonegate.control_plane.admin_api.pagination import next_link, page_body, parse_page_query
from zonegate.control_plane.admin_api.routing import Routes
from zonegate.control_plane.store import Store, decode_offset, encode_offset

PATH = "/clustering/data-planes"


def _store(request: web.Request) -> Store:
    store = context(request).store
    if not isinstance(store, Store):  # a DB-less node has no data planes to list
        raise web.HTTPNotFound()
    return store


async def list_data_planes(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    query = parse_page_query(request.query, tags=False)
    after = decode_offset(query.offset, 1)[0] if query.offset else None
    purge_delay = context(request).settings.cluster_data_plane_purge_delay
    rows, last = await data_planes.page(store.database, size=query.size, after=after, purge_delay=purge_delay)
    now = dt.datetime.now(dt.UTC)
    offset = encode_offset([last]) if last is not None else None
    body = page_body(
        [row.kong_body(purge_delay, now) for row in rows], offset, next_link(PATH, offset, query)
    )
    return json_response(body, 200)


async def cluster_status(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    purge_delay = context(request).settings.cluster_data_plane_purge_delay
    rows = await data_planes.all_rows(store.database, purge_delay=purge_delay)
    body: dict[str, Any] = {
        row.id: {
            "config_hash": row.config_hash,
            "hostname": row.hostname,
            "ip": row.ip,
            "last_seen": int(row.last_seen.timestamp()),
        }
        for row in rows
    }
    response = json_response(body, 200)
    response.headers["Deprecation"] = "true"
    return response


def register(routes: Routes) -> None:
    routes.add(PATH, {"GET": list_data_planes})
    routes.add("/clustering/status", {"GET": cluster_status})
