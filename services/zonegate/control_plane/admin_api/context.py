"""What every Admin API handler works with, built once by ``app.build_app`` and read from the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from zonegate.control_plane.admin_api.store_port import AdminStore
from zonegate.control_plane.exported import StoredExportHash
from zonegate.settings import Settings


@dataclass(frozen=True, slots=True)
class StatusCache:
    """The config hash of one config version: /status recomputes it only after a write."""

    version: int
    config_hash: str


@dataclass(slots=True)
class AdminContext:
    store: AdminStore
    settings: Settings
    enabled_plugins: tuple[str, ...]
    node_id: str
    hostname: str
    status_cache: StatusCache | None = field(default=None)
    # PostgreSQL only: the export hash followed by the revision log (a DB-less store re-hashes
    # its in-memory config, which changes only on POST /config).
    stored_hash: StoredExportHash | None = field(default=None)
    total_requests: int = 0


ADMIN: Final = web.AppKey("zonegate_admin", AdminContext)


def context(request: web.Request) -> AdminContext:
    return request.app[ADMIN]
