"""The Admin API's store on a node without a database: the active declarative config, in memory.

Kong serves the Admin API of a DB-less node from the config it runs (``kong/db/strategies/off``):
every read answers from it, every entity write is refused (``OperationUnsupported``, HTTP 405),
and ``POST /config`` replaces the whole config. ``ConfigStore`` does the same over the node's
active ``Config`` (``ActiveConfig``: the DB-less node itself), with the read semantics of the
PostgreSQL store (see ``admin_api.store_port``), so one set of handlers serves both:

* pages in id order, keyset offsets encoded as the PostgreSQL store encodes them (an offset from
  one store is meaningless to the other, but both refuse a malformed one with code 7); an offset
  survives a config change, as a keyset offset does: the next page starts after that id;
* lookups by any field, the first match in id order; ``/tags`` rows by (tag, kind, id), compared by
  code point (PostgreSQL compares tags with the database's collation: equal for ASCII lower case);
* entities carry ``created_at``/``updated_at`` as Kong's DB-less node shows them: the time this
  node loaded the config (a declarative file has no timestamps); exports leave them out, as ever.

Writes are refused only after the checks Kong's DAO runs before reaching its ``off`` strategy: a
PATCH body is merged and validated (400 first), a DELETE of a missing entity succeeds (204).

Invariant: an index is built for one config object and never mutated; a new config (reload, POST
/config) gets a new index, lazily, on the first read after it became active. ``config_version``
counts the configs this store has served, so it changes exactly when the config does.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from zonegate.control_plane.errors import NotFound, OperationUnsupported
from zonegate.control_plane.store import (
    DEFAULT_PAGE_SIZE,
    Snapshot,
    TagRow,
    decode_offset,
    encode_offset,
)
from zonegate.core.config import Config
from zonegate.core.entities import BY_NAME, KINDS
from zonegate.core.fields import UUID_RE
from zonegate.core.schema import TIMESTAMP_FIELDS, Entity

Foreign = tuple[str, str]


class ActiveConfig(Protocol):
    """Where the active config lives and how a new one is applied: the DB-less node."""

    @property
    def config(self) -> Config: ...

    async def apply_config(self, config: Config) -> None: ...


def _is_uuid(value: object) -> bool:
    return isinstance(value, str) and UUID_RE.match(value) is not None


def _check_kind(kind: str) -> None:
    if kind not in BY_NAME:
        raise ValueError(f"unknown entity kind: {kind!r}")


def _entity_id(entity: Entity) -> str:
    return str(entity["id"])


def _lookup_value(entity: Entity, field: str) -> str | None:
    """The text a lookup compares: the value itself, or the id a foreign key holds."""
    value = entity.get(field)
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) else None


class ConfigIndex:
    """One config, indexed for the Admin API's reads; the indexes beyond ids are built on first use."""

    def __init__(self, config: Config, generation: int, loaded_at: int) -> None:
        self.config = config
        self.generation = generation
        self.loaded_at = loaded_at
        self._by_id: dict[str, dict[str, Entity]] = {}
        self._by_field: dict[tuple[str, str], dict[str, list[Entity]]] = {}
        self._tag_rows: list[tuple[str, str, str]] | None = None

    def by_id(self, kind: str) -> dict[str, Entity]:
        found = self._by_id.get(kind)
        if found is None:
            found = self._by_id[kind] = self.config.by_id(kind)
        return found

    def by_field(self, kind: str, field: str) -> dict[str, list[Entity]]:
        """Entities by the text of one field, each list in id order."""
        key = (kind, field)
        found = self._by_field.get(key)
        if found is None:
            found = {}
            for entity in self.config.of(kind):
                value = _lookup_value(entity, field)
                if value is not None:
                    found.setdefault(value, []).append(entity)
            self._by_field[key] = found
        return found

    def children(self, kind: str, fk: str) -> dict[str, list[Entity]]:
        """Entities of ``kind`` by the id their foreign key ``fk`` points at, each list in id order."""
        if BY_NAME[kind].field(fk).kind != "foreign":
            raise ValueError(f"{kind}.{fk} is not a foreign key")
        return self.by_field(kind, fk)

    def tag_rows(self) -> list[tuple[str, str, str]]:
        """Every (tag, kind, id), sorted: one row per tag on an entity, as ``unnest(tags)`` gives."""
        if self._tag_rows is None:
            rows = [
                (tag, kind, entity["id"])
                for kind in KINDS
                if BY_NAME[kind].has_field("tags")
                for entity in self.config.of(kind)
                for tag in entity.get("tags") or ()
                if isinstance(tag, str)
            ]
            rows.sort()
            self._tag_rows = rows
        return self._tag_rows

    def present(self, kind: str, entity: Entity) -> Entity:
        """The entity with Kong's load-time timestamps where its kind has them."""
        schema = BY_NAME[kind]
        stamps = {
            name: self.loaded_at
            for name in TIMESTAMP_FIELDS
            if schema.has_field(name) and entity.get(name) is None
        }
        return {**entity, **stamps} if stamps else entity


def _tags_match(entity: Entity, tags_all: Sequence[str] | None, tags_any: Sequence[str] | None) -> bool:
    if tags_all is None and tags_any is None:
        return True
    tags = entity.get("tags") or ()
    if tags_all is not None:
        return all(tag in tags for tag in tags_all)
    assert tags_any is not None
    return any(tag in tags for tag in tags_any)


class ConfigStore:
    """Kong's DB-less store: reads from ``source.config``, writes refused, ``replace_all`` applies."""

    def __init__(self, source: ActiveConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._source = source
        self._clock = clock
        self._index: ConfigIndex | None = None
        self._generation = 0

    def _current(self) -> ConfigIndex:
        config = self._source.config
        index = self._index
        if index is None or index.config is not config:
            self._generation += 1
            index = self._index = ConfigIndex(config, self._generation, int(self._clock()))
        return index

    # -- reads ------------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Nothing to reach: the config is in this process."""

    async def get(self, kind: str, entity_id: str) -> Entity | None:
        _check_kind(kind)
        if not _is_uuid(entity_id):
            return None
        index = self._current()
        entity = index.by_id(kind).get(entity_id)
        return index.present(kind, entity) if entity is not None else None

    async def get_by_key(
        self, kind: str, value: str, *, field: str | None = None, foreign: Foreign | None = None
    ) -> Entity | None:
        _check_kind(kind)
        name = field or BY_NAME[kind].endpoint_key
        if name is None:
            raise ValueError(f"{kind} have no endpoint key; pass field=")
        if foreign is not None and not _is_uuid(foreign[1]):
            return None
        index = self._current()
        for entity in index.by_field(kind, name).get(value, ()):
            if foreign is None or _lookup_value(entity, foreign[0]) == foreign[1]:
                return index.present(kind, entity)
        return None

    async def page(
        self,
        kind: str,
        size: int = DEFAULT_PAGE_SIZE,
        offset: str | None = None,
        *,
        tags_all: Sequence[str] | None = None,
        tags_any: Sequence[str] | None = None,
        foreign: Foreign | None = None,
    ) -> tuple[list[Entity], str | None]:
        _check_kind(kind)
        if size < 1:
            raise ValueError("size must be at least 1")
        if tags_all is not None and tags_any is not None:
            raise ValueError("pass tags_all or tags_any, not both")
        index = self._current()
        candidates: Sequence[Entity]
        if foreign is not None:
            fk, parent_id = foreign
            children = index.children(kind, fk)
            if not _is_uuid(parent_id):
                return [], None
            candidates = children.get(parent_id, ())
        else:
            candidates = index.config.of(kind)  # in id order: a Config keeps each kind sorted
        start = 0
        if offset is not None:
            (after,) = decode_offset(offset, 1)
            start = bisect.bisect_right(candidates, after, key=_entity_id)
        found: list[Entity] = []
        for entity in candidates[start:]:
            if _tags_match(entity, tags_all, tags_any):
                if len(found) == size:
                    return found, encode_offset([found[-1]["id"]])
                found.append(index.present(kind, entity))
        return found, None

    async def tags(
        self, size: int = DEFAULT_PAGE_SIZE, offset: str | None = None, *, tag: str | None = None
    ) -> tuple[list[TagRow], str | None]:
        if size < 1:
            raise ValueError("size must be at least 1")
        rows = self._current().tag_rows()
        lower: tuple[str, ...] = (tag,) if tag is not None else ()
        if offset is not None:
            last = tuple(decode_offset(offset, 3))
            lower = max(lower, last)
        start = bisect.bisect_right(rows, lower) if offset is not None else bisect.bisect_left(rows, lower)
        found: list[TagRow] = []
        for row in rows[start:]:
            if tag is not None and row[0] != tag:
                break
            if len(found) == size:
                last_row = found[-1]
                return found, encode_offset([last_row.tag, last_row.entity_name, last_row.entity_id])
            found.append(TagRow(*row))
        return found, None

    async def config_version(self) -> int:
        return self._current().generation

    async def snapshot(self) -> Snapshot:
        index = self._current()
        return Snapshot(index.generation, index.config)

    async def export(self) -> Config:
        return self._current().config

    # -- writes -----------------------------------------------------------------------------------

    async def insert(self, kind: str, entity: Mapping[str, Any]) -> Entity:
        _check_kind(kind)
        raise OperationUnsupported(kind, "create")

    async def upsert(self, kind: str, entity: Mapping[str, Any], *, by: str = "id") -> Entity:
        _check_kind(kind)
        raise OperationUnsupported(kind, "create or update")

    async def update(self, kind: str, entity_id: str, entity: Mapping[str, Any]) -> Entity:
        _check_kind(kind)
        raise OperationUnsupported(kind, "update")

    async def patch(self, kind: str, entity_id: str, change: Callable[[Entity], Mapping[str, Any]]) -> Entity:
        """Kong validates a PATCH before its strategy refuses it: a bad body is still a 400."""
        current = await self.get(kind, entity_id)
        if current is None:
            raise NotFound(kind, {"id": entity_id})
        change(current)
        raise OperationUnsupported(kind, "update")

    async def delete(self, kind: str, entity_id: str) -> Entity | None:
        """Deleting what is not there succeeds, as Kong's DAO checks before its strategy refuses."""
        if await self.get(kind, entity_id) is None:
            return None
        raise OperationUnsupported(kind, "remove")

    async def replace_all(self, config: Config) -> int:
        """``POST /config``: the node applies ``config`` (proxy, LMDB cache); return its version."""
        await self._source.apply_config(config)
        return self._current().generation
