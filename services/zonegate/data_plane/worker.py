"""A proxy worker process (``zonegate worker``), started and supervised by the config agent.

It serves the proxy listeners (shared with its siblings through SO_REUSEPORT) with the config
the agent last wrote to LMDB, and answers the agent's control messages on stdin/stdout: hello,
reload (re-read LMDB), stats, health, drain. End of stdin means the agent is gone: drain and exit.
SIGINT is ignored so that a Ctrl-C in a terminal, which reaches the whole process group, is
handled by the agent, which then drains the workers in order.

A reload follows the cache incrementally when it can: the worker remembers the cache generation
and how many of its deltas it has applied, reads only the deltas appended since, and rebuilds
only what they name (``build_runtime`` with a ``Change``) using the hashes the meta records. A
rewritten cache (new generation), or anything unexpected on the way, costs a whole read instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from zonegate.core import config_delta
from zonegate.core.config import Config
from zonegate.core.config_delta import Change, ConfigDelta
from zonegate.core.schema import Entity
from zonegate.data_plane.lmdb_cache import CachedUpdate, ConfigCache
from zonegate.data_plane.proxy_host import InProcessProxy
from zonegate.settings import Settings

log = structlog.get_logger(__name__)

DEFAULT_GRACE = 10.0


def merged(deltas: Sequence[ConfigDelta]) -> ConfigDelta:
    """One delta that does what ``deltas`` do applied in order: per (kind, id), the last delta
    naming the entity decides (within a delta, its upsert wins over its delete, as in
    ``config_delta.apply``). A delete may name an entity the base never had (created, then
    deleted); applying it, like any delete of an absent id, removes nothing."""
    if len(deltas) == 1:
        return deltas[0]
    last: dict[str, dict[str, Entity | None]] = {}  # None: deleted
    for delta in deltas:
        for kind, ids in delta.deletes.items():
            last.setdefault(kind, {}).update(dict.fromkeys(ids))
        for kind, entities in delta.upserts.items():
            last.setdefault(kind, {}).update((entity["id"], entity) for entity in entities)
    upserts = {kind: tuple(e for e in by_id.values() if e is not None) for kind, by_id in last.items()}
    deletes = {kind: tuple(i for i, e in by_id.items() if e is None) for kind, by_id in last.items()}
    return ConfigDelta(
        {kind: found for kind, found in upserts.items() if found},
        {kind: ids for kind, ids in deletes.items() if ids},
    )


def _advanced(base: Config, deltas: Sequence[ConfigDelta]) -> tuple[Config, Change]:
    delta = merged(deltas)
    return config_delta.apply(base, delta), Change(base, delta)


@dataclass(frozen=True, slots=True)
class Served:
    """What the proxy serves, as the cache named it: the base the next deltas apply to.
    ``generation`` "" means unknown: the next reload reads the whole config."""

    generation: str
    deltas: int
    config: Config


class CacheFollower:
    """Keeps this worker's proxy on what the agent last wrote to the LMDB cache."""

    def __init__(self, cache: ConfigCache, proxy: InProcessProxy) -> None:
        self.cache = cache
        self.proxy = proxy
        self.served = Served("", 0, Config())

    async def start(self) -> None:
        cached = self.cache.read()
        if cached is not None:
            self.served = Served(cached.generation, cached.deltas, cached.config)
        # The very config object the runtime is built from: a later Change's base is it.
        await self.proxy.start(self.served.config, cached.known_hash if cached is not None else None)

    async def reload(self) -> None:
        """The new deltas when the cache has only appended some, else the whole config. Raises
        when the whole config does not apply (the proxy keeps serving what it served)."""
        served = self.served
        if served.generation:
            try:
                update = await asyncio.to_thread(self.cache.read_after, served.generation, served.deltas)
                if update is not None:
                    await self._follow(served, update)
                    return
            except Exception as exc:  # never worse than a whole read
                log.warning("worker.deltas_failed", error=str(exc), generation=served.generation)
        try:
            await self._read_whole(served)
        except Exception:
            # What was served is unchanged, but the cache has moved on: read it whole next time.
            self.served = Served("", 0, served.config)
            raise

    async def _follow(self, served: Served, update: CachedUpdate) -> None:
        if not update.deltas:
            log.debug("worker.reload_unchanged", generation=update.generation, deltas=update.count)
            return
        started = time.perf_counter()
        config, change = await asyncio.to_thread(_advanced, served.config, update.deltas)
        await self.proxy.apply(config, update.known_hash, change)
        self.served = Served(update.generation, update.count, config)
        self._reloaded(started, whole=False, deltas=len(update.deltas), version=update.version)

    async def _read_whole(self, served: Served) -> None:
        started = time.perf_counter()
        cached = await asyncio.to_thread(self.cache.read)
        if cached is None:  # nothing readable (reported by read): keep serving what we serve
            self.served = Served("", 0, served.config)
            return
        await self.proxy.apply(cached.config, cached.known_hash)
        self.served = Served(cached.generation, cached.deltas, cached.config)
        self._reloaded(started, whole=True, deltas=cached.deltas, version=cached.version)

    def _reloaded(self, started: float, *, whole: bool, deltas: int, version: int) -> None:
        """``deltas``: applied by this reload (new ones, or those replayed on a whole config)."""
        log.info(
            "worker.reloaded",
            pid=os.getpid(),
            whole=whole,
            deltas=deltas,
            version=version,
            generation=self.served.generation,
            config_hash=self.proxy.config_hash,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )


async def run_worker(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cache = ConfigCache.for_settings(settings, owner=False)
    proxy = InProcessProxy(settings, reuse_port=True)
    follower = CacheFollower(cache, proxy)
    await follower.start()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)

    async def reply(message: dict[str, Any]) -> None:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()

    grace = DEFAULT_GRACE
    control = loop.create_task(reader.readline())
    stopping = loop.create_task(stop.wait())
    try:
        while True:
            done, _ = await asyncio.wait({control, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                break
            line = control.result()
            if not line:
                log.warning("worker.agent_gone")
                break
            message = json.loads(line)
            op = message.get("op")
            if op == "hello":
                await reply({"ok": True, "config_hash": proxy.config_hash})
            elif op == "reload":
                try:
                    await follower.reload()
                except Exception as exc:  # keep serving the running config rather than crash-loop
                    log.exception("worker.reload_failed", error=str(exc))
                    await reply({"ok": False, "error": str(exc), "config_hash": proxy.config_hash})
                else:
                    await reply({"ok": True, "config_hash": proxy.config_hash})
            elif op == "stats":
                await reply({"ok": True, "stats": await proxy.stats()})
            elif op == "metrics":
                await reply({"ok": True, "metrics": await proxy.metrics()})
            elif op == "health":
                health = await proxy.upstream_health(
                    str(message["upstream"]), bool(message.get("balancer_health"))
                )
                await reply({"ok": True, "health": health})
            elif op == "drain":
                grace = float(message.get("grace", DEFAULT_GRACE))
                await reply({"ok": True})
                break
            else:
                await reply({"ok": False, "error": f"unknown op {op!r}"})
            control = loop.create_task(reader.readline())
    finally:
        control.cancel()
        stopping.cancel()
        await asyncio.gather(control, stopping, return_exceptions=True)
        await proxy.drain(grace)
        cache.close()
        writer.close()
