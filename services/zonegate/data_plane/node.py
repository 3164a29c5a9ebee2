"""The config agent of a proxy node: ``data_plane``, or ``traditional`` (DB-less or with PostgreSQL).

The agent owns the config: it reads the declarative file (a bad file stops start-up with every
error located), writes the active config to the LMDB cache, and hands it to the proxy, which
runs in this process (``workers = 1``) or in worker processes it supervises. It serves the
Status API, and on a traditional node Kong's DB-less Admin API (reads from the active config,
``POST /config`` applies a new one like a reload). SIGHUP re-reads the file; a bad file keeps
the running config and says why.
SIGTERM or SIGINT drains in-flight requests within the grace period and exits. The pid goes to
``<prefix>/zonegate.pid`` for ``zonegate stop`` and ``zonegate reload``.

Config sources besides the file: the bus on a data plane (``hybrid``), the PostgreSQL store on a
traditional node with a database (``control_plane.traditional``, which also brings the control
plane's Admin API: Kong's default mode in one process). All apply through ``apply_config``.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog
from aiohttp import web

from zonegate import compiled
from zonegate.core import declarative
from zonegate.core.canonical import ConfigHash, config_hash
from zonegate.core.config import Config
from zonegate.core.config_delta import Change
from zonegate.core.errors import DeclarativeConfigError
from zonegate.data_plane.config_agent import SyncState
from zonegate.data_plane.hybrid import DataPlaneHybrid
from zonegate.data_plane.lmdb_cache import ConfigCache
from zonegate.data_plane.proxy_host import InProcessProxy, ProxyHost, WorkerPool
from zonegate.data_plane.status_api import build_app, start_status_api
from zonegate.data_plane.tls import ensure_default_certificate
from zonegate.node_identity import load_node_id
from zonegate.process_control import PID_FILE, StartError
from zonegate.settings import Settings

if TYPE_CHECKING:
    from zonegate.control_plane.traditional import StoreFollower

log = structlog.get_logger(__name__)

GRACE_SECONDS: Final = 10.0


def read_declarative(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StartError([f"cannot read declarative_config {path}: {exc.strerror or exc}"]) from None
    try:
        return declarative.loads(text)
    except DeclarativeConfigError as exc:
        lines = exc.lines()
        raise StartError(
            [f"declarative_config {path}: {len(lines)} error{'s' if len(lines) != 1 else ''}"]
            + [f"  {line}" for line in lines]
        ) from None


class DbLessNode:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host: ProxyHost | None = None
        self.config = Config()
        self.version = 0
        self.stop_event = asyncio.Event()
        self.pid_path = settings.prefix / PID_FILE
        self.reloading: asyncio.Task[None] | None = None
        self.cache: ConfigCache | None = None
        self._cached_hash: ConfigHash | None = None  # the hashes the cache's meta recorded
        # One apply at a time: a reload (SIGHUP) and a POST /config must not interleave.
        self.applying = asyncio.Lock()
        # The cache holds a config the proxy refused (its apply failed after the write): a delta
        # from what is served must not be appended to it; the next write is whole.
        self._cache_ahead = False
        self.sync = SyncState()  # what a hybrid data plane serves, as its heartbeats report it
        self.hybrid: DataPlaneHybrid | None = None
        self.follower: StoreFollower | None = None  # traditional with PostgreSQL

    def read_config(self) -> Config:
        path = self.settings.declarative_config
        if path is None:
            return Config()
        return read_declarative(self.settings.resolve_path(path))

    def initial_config(self) -> tuple[Config, bool]:
        """The config to serve first, and whether it came from the cache.

        A DB-less node follows Kong: the declarative file when there is one, else the cache. A
        hybrid data plane prefers its cache, the last config a control plane sent, and falls back
        to the file, else to nothing (not ready) until the bus brings one (DESIGN section 3).
        """
        if self.settings.is_data_plane or self.settings.declarative_config is None:
            cached = self._read_cache()
            if cached is not None:
                return cached, True
        return self.read_config(), False

    def _read_cache(self) -> Config | None:
        assert self.cache is not None
        cached = self.cache.read()
        if self.cache.moved_aside:  # reported to the control plane too, through the heartbeats
            self.sync.cache_problem = f"unreadable config cache moved aside to {self.cache.moved_aside[-1]}"
        if cached is None:
            return None
        log.info(
            "config.from_cache",
            config_hash=cached.config_hash,
            version=cached.version,
            written_at=cached.written_at,
        )
        self.version = cached.version
        self._cached_hash = cached.known_hash  # None for a cache written before it kept them
        if self.settings.is_data_plane:
            self.sync.version, self.sync.config_hash = cached.version, cached.config_hash
        return cached.config

    def _write_cache(
        self,
        config: Config,
        version: int | None = None,
        digest: str | None = None,
        payload: bytes | None = None,
        delta: bytes | None = None,
        hashes: ConfigHash | None = None,
    ) -> None:
        """``version``: a control plane's; None for a local change (reload, POST /config).
        ``payload``: the snapshot's compressed canonical JSON, stored as it came; ``delta``: a
        delta snapshot's payload, appended after the cached config (the whole config is written
        instead when the cache cannot take another delta). ``hashes``: the snapshot's signed
        hashes; recorded with the config so that workers need not hash it again."""
        assert self.cache is not None
        self.version = self.version + 1 if version is None else version
        if hashes is None and not digest:
            hashes = config_hash(config)  # hashed anyway for the digest: the groups come free
        digest = digest or (hashes.config_hash if hashes is not None else "")
        groups = hashes.hashes if hashes is not None and hashes.config_hash == digest else None
        if delta is not None and self.cache.append_delta(delta, digest, self.version, groups):
            return
        if payload is not None:
            self.cache.write_compressed(payload, digest, self.version, groups)
        else:
            self.cache.write(config, digest, self.version, groups)

    async def run(self) -> None:
        settings = self.settings
        try:
            settings.prefix.mkdir(parents=True, exist_ok=True)
            self.cache = ConfigCache.for_settings(settings)
        except OSError as exc:
            raise StartError([f"cannot use prefix {settings.prefix}: {exc.strerror or exc}"]) from None
        except ValueError as exc:
            raise StartError([str(exc)]) from None
        node_id = load_node_id(settings.prefix)
        if settings.is_data_plane:  # before anything starts: a bad cluster certificate is one line
            self.hybrid = DataPlaneHybrid(settings, self, node_id, self.sync)
        if settings.database != "off":
            from zonegate.control_plane.traditional import StoreFollower  # only this role needs it

            self.follower = StoreFollower(settings, self)
            config = await self.follower.open()
            hashes: ConfigHash | None = self.follower.opened_hashes
            self._write_cache(config, self.follower.version, hashes=hashes)
        else:
            config, from_cache = self.initial_config()
            hashes = self._cached_hash if from_cache else config_hash(config)
            if not from_cache:
                self._write_cache(config, hashes=hashes)
        self.config = config
        if any(listen.ssl for listen in settings.proxy_listen):
            ensure_default_certificate(settings.prefix / "ssl")  # once, before workers race for it
        host: ProxyHost = (
            InProcessProxy(settings) if settings.workers <= 1 else WorkerPool(settings, settings.workers)
        )
        self.host = host
        status_runner = admin_runner = None
        try:
            try:
                await host.start(config, hashes)
                app = build_app(
                    lambda: self.host,
                    lambda: not self.config.is_empty(),
                    node_id=node_id,
                    clustering=lambda: self.hybrid.status() if self.hybrid is not None else None,
                )
                if settings.status_listen:
                    status_runner = await start_status_api(app, settings.status_listen)
                admin_runner = await self._start_admin_api(node_id)
                if self.hybrid is not None:
                    await self.hybrid.start()
                if self.follower is not None:
                    await self.follower.start()
            except OSError as exc:
                raise StartError([f"cannot listen: {exc.strerror or exc}"]) from None
            self.pid_path.write_text(f"{os.getpid()}\n")
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
            loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
            loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
            log.info(
                "node.started",
                role=settings.role,
                workers=settings.workers,
                proxy=[str(listen) for listen in settings.proxy_listen],
                status=[str(listen) for listen in settings.status_listen],
                admin=[str(listen) for listen in settings.admin_listen] if admin_runner else [],
                config_hash=host.config_hash,
                pid=os.getpid(),
                hot_path=compiled.summary(),
            )
            await self.stop_event.wait()
            log.info("node.stopping", grace_seconds=GRACE_SECONDS)
        finally:
            if self.reloading is not None:
                self.reloading.cancel()
                await asyncio.gather(self.reloading, return_exceptions=True)
            if self.hybrid is not None:
                await self.hybrid.close()
            if self.follower is not None:
                await self.follower.close()
            if admin_runner is not None:
                await admin_runner.cleanup()
            await host.drain(GRACE_SECONDS)
            if status_runner is not None:
                await status_runner.cleanup()
            if self.cache is not None:
                self.cache.close()
            if self.pid_path.exists():
                self.pid_path.unlink()
            log.info("node.stopped")

    async def _start_admin_api(self, node_id: str) -> web.AppRunner | None:
        """Kong's DB-less Admin API, on a traditional node only (see ``admin_api.dbless``)."""
        if self.follower is not None:  # PostgreSQL: the control plane's Admin API
            return await self.follower.start_admin_api(node_id, GRACE_SECONDS)
        from zonegate.control_plane.admin_api import dbless  # only nodes that serve it import it

        if not dbless.serves_admin_api(self.settings):
            return None
        return await dbless.start_dbless_admin_api(self, self.settings, node_id=node_id, grace=GRACE_SECONDS)

    def request_reload(self) -> None:
        """SIGHUP: one reload at a time; a signal during a reload runs another one after it."""
        previous = self.reloading

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await self.reload()

        self.reloading = asyncio.get_running_loop().create_task(run())

    async def reload(self) -> None:
        """Re-read the declarative file; a bad file keeps the running config."""
        host = self.host
        if host is None:
            return
        if self.settings.declarative_config is None:
            # No file to re-read: the running config (from the cache or POST /config) stays.
            log.info("config.reload_skipped", reason="no declarative_config")
            return
        # Parsing, validating and caching a large config takes long: do it in a thread, so the
        # proxy keeps answering in between (the GIL is handed back every few milliseconds)
        # instead of stalling every request for the whole reload.
        try:
            config = await asyncio.to_thread(self.read_config)
        except StartError as exc:
            log.error("config.reload_rejected", reason=exc.lines[0], errors=exc.lines[1:])
            return
        try:
            await self.apply_config(config)
        except Exception as exc:  # a config that validates but cannot be applied must not kill the node
            log.exception("config.reload_failed", error=str(exc))
            return
        log.info("config.reloaded", config_hash=host.config_hash)

    async def apply_snapshot(
        self,
        config: Config,
        version: int,
        hashes: ConfigHash,
        payload: bytes | None = None,
        delta: bytes | None = None,
        change: Change | None = None,
    ) -> None:
        """A control plane's snapshot, checked by the config agent: cache it, then serve it."""
        await self.apply_config(
            config, version=version, hashes=hashes, payload=payload, delta=delta, change=change
        )

    async def apply_config(
        self,
        config: Config,
        *,
        version: int | None = None,
        hashes: ConfigHash | None = None,
        payload: bytes | None = None,
        delta: bytes | None = None,
        change: Change | None = None,
    ) -> None:
        """Make a validated config the active one: LMDB cache first, then the proxy.

        Reloads and the Admin API's ``POST /config`` both land here. An exception leaves the
        running config in place (the cache may already hold the new one, as after a crash).
        """
        host = self.host
        if host is None:
            raise RuntimeError("the node is not started")
        async with self.applying:
            digest = hashes.config_hash if hashes is not None else None
            appended = delta if not self._cache_ahead else None
            await asyncio.to_thread(self._write_cache, config, version, digest, payload, appended, hashes)
            self._cache_ahead = True
            await host.apply(config, hashes, change)
            self._cache_ahead = False
            self.config = config
