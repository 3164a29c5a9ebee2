"""What the Admin API needs from a store: one port, two back ends, one set of handlers.

The control plane's ``store.Store`` (PostgreSQL) and a DB-less node's ``config_store.ConfigStore``
(the active declarative config, in memory) both implement ``AdminStore``; every handler is written
against it alone. Both keep the same read semantics, which clients and Kong tooling depend on:
pages in id order with opaque keyset offsets (a bad one is ``InvalidOffset``), ``tags_all`` for
Kong's ``?tags=a,b`` and ``tags_any`` for ``?tags=a/b``, lookups by any unique or cache-key field
(first match in id order), ``/tags`` rows ordered by (tag, entity name, entity id).

Writes differ by design: the DB-less store refuses every entity write with ``OperationUnsupported``
(Kong's code 12, HTTP 405), after the same validation Kong runs first, and ``replace_all`` (``POST
/config``) applies the new config to the node instead of a database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from zonegate.control_plane.store import DEFAULT_PAGE_SIZE, Snapshot, TagRow
from zonegate.core.config import Config
from zonegate.core.schema import Entity

Foreign = tuple[str, str]  # (the child's foreign key field, the parent's id)


class EntityReader(Protocol):
    """The read side: every ``GET`` of the Admin API goes through these."""

    async def ping(self) -> None: ...

    async def get(self, kind: str, entity_id: str) -> Entity | None: ...

    async def get_by_key(
        self, kind: str, value: str, *, field: str | None = None, foreign: Foreign | None = None
    ) -> Entity | None: ...

    async def page(
        self,
        kind: str,
        size: int = DEFAULT_PAGE_SIZE,
        offset: str | None = None,
        *,
        tags_all: Sequence[str] | None = None,
        tags_any: Sequence[str] | None = None,
        foreign: Foreign | None = None,
    ) -> tuple[list[Entity], str | None]: ...

    async def tags(
        self, size: int = DEFAULT_PAGE_SIZE, offset: str | None = None, *, tag: str | None = None
    ) -> tuple[list[TagRow], str | None]: ...

    async def config_version(self) -> int: ...

    async def snapshot(self) -> Snapshot: ...

    async def export(self) -> Config: ...


class EntityWriter(Protocol):
    """The write side: entity endpoints and ``POST /config``."""

    async def insert(self, kind: str, entity: Mapping[str, Any]) -> Entity: ...

    async def upsert(self, kind: str, entity: Mapping[str, Any], *, by: str = "id") -> Entity: ...

    async def patch(
        self, kind: str, entity_id: str, change: Callable[[Entity], Mapping[str, Any]]
    ) -> Entity: ...

    async def delete(self, kind: str, entity_id: str) -> Entity | None: ...

    async def replace_all(self, config: Config) -> int: ...


class AdminStore(EntityReader, EntityWriter, Protocol):
    """Everything the Admin API's handlers call."""
