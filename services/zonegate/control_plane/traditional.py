"""A traditional node with PostgreSQL: Kong's default mode, Admin API and proxy in one process.

The proxy half is the same node a data plane runs (``data_plane.node``); its config source is
the store instead of a file or the bus. It starts from one consistent snapshot and follows every
committed version (``ConfigListener``: LISTEN plus a periodic read), applying the newest one
through the same swap a reload uses. Bursts of writes coalesce: one apply at a time, and the
next one reads whatever is newest by then.
"""

from __future__ import annotations

import asyncio
from typing import Final

import msgspec
import structlog
import zstandard
from aiohttp import web

from zonegate.control_plane.admin_api import build_app
from zonegate.control_plane.admin_api.listeners import start_admin_api
from zonegate.control_plane.config_tracker import ConfigTracker
from zonegate.control_plane.listener import ConfigListener
from zonegate.control_plane.node import open_store
from zonegate.control_plane.store import Store
from zonegate.core.canonical import ConfigHash, EncodingCache, cached_hash, encode_config
from zonegate.core.config import Config
from zonegate.core.config_delta import Change
from zonegate.data_plane.config_agent import SnapshotTarget  # the node, as a data plane's agent sees it
from zonegate.settings import Settings

log = structlog.get_logger(__name__)

POLL_SECONDS: Final = 5.0


class StoreFollower:
    def __init__(self, settings: Settings, target: SnapshotTarget) -> None:
        self.settings = settings
        self._target = target
        self._store: Store | None = None
        self._tracker: ConfigTracker | None = None  # the store's config, followed by revisions
        self._encodings = EncodingCache()  # hashes a change without encoding the rest again
        self._applied = Config()  # what the node serves and caches: a change must start from it
        self.opened_hashes: ConfigHash | None = None  # of the config open() returned
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: ConfigListener | None = None
        self.version = 0

    @property
    def store(self) -> Store:
        assert self._store is not None, "open() first"
        return self._store

    async def open(self) -> Config:
        """Connect (one clear line if the database is not ready) and read the config to start with."""
        self._store = await open_store(self.settings)
        self._tracker = ConfigTracker(self._store)
        snapshot = await self._tracker.current()
        self.version = snapshot.version
        self._applied = snapshot.config
        # Through the encoding cache: the first change then encodes only what it names.
        self.opened_hashes = await asyncio.to_thread(cached_hash, snapshot.config, self._encodings)
        return snapshot.config

    async def start_admin_api(self, node_id: str, grace: float) -> web.AppRunner | None:
        if not self.settings.admin_listen:
            return None
        app = build_app(self.store, self.settings, node_id=node_id)
        return await start_admin_api(app, self.settings, grace=grace)

    async def start(self) -> None:
        listener = self.store.listen(self._on_version, poll_interval=POLL_SECONDS)
        await listener.start()
        self._listener = listener
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="store-follower")

    def _on_version(self, version: int) -> None:
        if version > self.version:
            self._wanted.set()

    async def _follow(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                assert self._tracker is not None
                snapshot = await self._tracker.current()
                if snapshot.version <= self.version:
                    continue
                # The revisions' change, when the tracker read them and it starts from what the
                # node serves (not after a failed apply): only what it names is hashed, rebuilt
                # and appended to the cache (the router updates the routes that moved).
                change = self._tracker.change
                if change is not None and change.base is not self._applied:
                    change = None
                hashes, payload, delta = await asyncio.to_thread(self._encode, snapshot.config, change)
                await self._target.apply_snapshot(
                    snapshot.config, snapshot.version, hashes, payload, delta, change
                )
                digest = hashes.config_hash
                self.version, self._applied = snapshot.version, snapshot.config
                log.info("config.followed", version=snapshot.version, config_hash=digest)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: keep serving, try again shortly
                log.warning("config.follow_failed", error=repr(exc))
                await asyncio.sleep(1.0)
                self._wanted.set()

    def _encode(self, config: Config, change: Change | None) -> tuple[ConfigHash, bytes | None, bytes | None]:
        """The config's hashes, and what the LMDB cache keeps of it: the change alone when there
        is one (appended, so workers follow it too), else the whole config; both as a data
        plane caches them (zstd of the canonical JSON of the config, or of the delta)."""
        compressor = zstandard.ZstdCompressor(level=3)
        if change is not None:
            hashes = cached_hash(config, self._encodings, change)
            return hashes, None, compressor.compress(msgspec.json.encode(change.delta.document()))
        raw, hashes = encode_config(config, self._encodings)
        return hashes, compressor.compress(raw), None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        listener = self._listener
        if listener is not None:
            await listener.stop()
        if self._store is not None:
            await self._store.close()
