"""The control plane's config as a declarative file sees it, and the hash of that.

Declarative files carry no timestamps (``core.declarative`` drops them on both sides), so the
config a file describes and the config the store holds differ by ``created_at``/``updated_at``
alone. ``export_hash`` hashes the store's config without them: it equals ``zonegate config hash``
of the file ``zonegate config db-export`` writes, and is what ``POST /config?check_hash=1``
compares an uploaded file against.
"""

from __future__ import annotations

import asyncio

from zonegate.control_plane.config_tracker import ConfigTracker
from zonegate.control_plane.store import Store
from zonegate.core import config_delta
from zonegate.core.canonical import EncodingCache, cached_hash, config_hash
from zonegate.core.config import Config
from zonegate.core.config_delta import Change, ConfigDelta
from zonegate.core.schema import TIMESTAMP_FIELDS, Entity


def without_timestamps(config: Config) -> Config:
    return Config.build(
        {kind: [_stripped(entity) for entity in entities] for kind, entities in config.entities.items()}
    )


def _stripped(entity: Entity) -> Entity:
    return {k: v for k, v in entity.items() if k not in TIMESTAMP_FIELDS}


def export_hash(config: Config) -> str:
    return config_hash(without_timestamps(config)).config_hash


class ExportHasher:
    """``export_hash`` of one config after another, each hashed by what changed since the last.

    Stripping and hashing the whole config costs ~60 ms at 10,000 routes (seconds at 100,000).
    Given the change from the config hashed last (``Change``, as the revision log gives it),
    only the changed entities lose their timestamps and are encoded again.
    """

    def __init__(self) -> None:
        self._encodings = EncodingCache()
        self._source: Config | None = None  # the config hashed last, as stored
        self._stripped = Config()  # the same without timestamps

    def hash(self, config: Config, change: Change | None = None) -> str:
        step: Change | None = None
        if change is not None and change.base is self._source:
            upserts = {kind: tuple(map(_stripped, found)) for kind, found in change.delta.upserts.items()}
            delta = ConfigDelta(upserts, change.delta.deletes)
            stripped = config_delta.apply(self._stripped, delta)
            step = Change(self._stripped, delta)
        else:
            stripped = without_timestamps(config)
        digest = cached_hash(stripped, self._encodings, step).config_hash
        self._source, self._stripped = config, stripped
        return digest


class StoredExportHash:
    """The stored config's version and ``export_hash``, followed by the revision log: what the
    Admin API's ``/status`` and ``POST /config?check_hash`` compare against after every write."""

    def __init__(self, store: Store) -> None:
        self._tracker = ConfigTracker(store)
        self._hasher = ExportHasher()
        self._lock = asyncio.Lock()  # one reader of the revisions at a time

    async def current(self) -> tuple[int, str]:
        async with self._lock:
            snapshot = await self._tracker.current()
            change = self._tracker.change
            digest = await asyncio.to_thread(self._hasher.hash, snapshot.config, change)
            return snapshot.version, digest
