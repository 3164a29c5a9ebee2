"""Where the proxy runs: in the agent's own process (``workers = 1``) or in worker processes.

The config agent (``node.py``) talks to either through the same small interface: start with a
config, apply a new one, report counters and upstream health, drain. Workers are separate
``zonegate worker`` processes sharing the listen ports with SO_REUSEPORT; each reads the
active config from the LMDB cache the agent wrote and builds its own router and balancers off
the hot path. The agent restarts a worker that dies. The control channel is one JSON line per
message over the worker's stdin and stdout (its logs go to stderr).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, Final, Protocol

import structlog

from zonegate.core.canonical import ConfigHash
from zonegate.core.config import Config
from zonegate.core.config_delta import Change
from zonegate.data_plane.access_log import AccessLog
from zonegate.data_plane.health import HealthChecker
from zonegate.data_plane.heap import without_gc
from zonegate.data_plane.runtime import HeaderOptions, Limits, build_runtime
from zonegate.data_plane.server import ProxyServer
from zonegate.data_plane.tls import CertificateSelector, ensure_default_certificate
from zonegate.plugins.api import Plugin
from zonegate.plugins.prometheus.exporter import wants_upstream_health
from zonegate.plugins.prometheus.metrics import REGISTRY
from zonegate.plugins.registry import loaded_handlers
from zonegate.settings import Settings

log = structlog.get_logger(__name__)

RESTART_DELAY: Final = 0.5
REPLY_TIMEOUT: Final = 60.0


class ProxyHost(Protocol):
    config_hash: str

    async def start(self, config: Config, hashes: ConfigHash | None = None) -> None: ...

    async def apply(
        self, config: Config, hashes: ConfigHash | None = None, change: Change | None = None
    ) -> None: ...

    async def stats(self) -> dict[str, int]: ...

    async def upstream_health(self, name: str, balancer_health: bool) -> Any | None: ...

    async def metrics(self) -> dict[str, Any]: ...

    async def drain(self, grace: float) -> None: ...

    @property
    def draining(self) -> bool: ...


def process_memory() -> dict[str, int]:
    """Current and peak resident memory of this process image, from /proc/self/status.

    Not ``getrusage``: its ``ru_maxrss`` survives ``exec``, so a process forked from a large
    parent (a test runner, a supervisor) would report the parent's size as its own peak.
    """
    found = {"VmRSS:": 0, "VmHWM:": 0}
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                parts = line.split()
                if parts and parts[0] in found:
                    found[parts[0]] = int(parts[1])
    except (OSError, ValueError, IndexError):
        pass
    return {"workers_rss_kib": found["VmRSS:"], "max_rss_kib": found["VmHWM:"]}


def runtime_options(settings: Settings) -> tuple[HeaderOptions, Limits]:
    limits = Limits(
        max_header_bytes=settings.max_request_header_size,
        max_headers=settings.max_request_headers,
        max_body_bytes=settings.client_max_body_size,
        keepalive_timeout=settings.keepalive_timeout,
        header_timeout=settings.client_header_timeout,
        body_timeout=settings.client_body_timeout,
    )
    return HeaderOptions.from_tokens(settings.headers), limits


class InProcessProxy:
    """The proxy in this process: one ProxyServer, its health checker and access log."""

    def __init__(self, settings: Settings, *, reuse_port: bool = False) -> None:
        self.settings = settings
        self.reuse_port = reuse_port
        self.server: ProxyServer | None = None
        self.health = HealthChecker()
        self.access_log: AccessLog | None = None
        self.config_hash = "0" * 32
        self.handlers: dict[str, type[Plugin]] = {}

    @property
    def draining(self) -> bool:
        return self.server is not None and self.server.draining

    async def start(self, config: Config, hashes: ConfigHash | None = None) -> None:
        """``hashes``: the config's, when known (from the cache's meta): not hashed again."""
        settings = self.settings
        headers, limits = runtime_options(settings)
        handlers = self.handlers = loaded_handlers(settings.plugins)
        for handler in handlers.values():
            handler.init_worker(settings)
        runtime = build_runtime(
            config, headers=headers, limits=limits, plugin_handlers=handlers, known_hash=hashes
        )
        certificates = None
        if any(listen.ssl for listen in settings.proxy_listen):
            certificates = CertificateSelector(*ensure_default_certificate(settings.prefix / "ssl"))
        if settings.proxy_access_log is not None:
            self.access_log = AccessLog(settings.resolve_path(settings.proxy_access_log))
        self.server = ProxyServer(
            runtime,
            access_log=self.access_log,
            certificates=certificates,
            pool_size=settings.upstream_keepalive_pool_size,
            pool_max_requests=settings.upstream_keepalive_max_requests,
            pool_idle_timeout=settings.upstream_keepalive_idle_timeout,
            trusted_ips=settings.trusted_ips,
            real_ip_header=settings.real_ip_header,
            real_ip_recursive=settings.real_ip_recursive,
        )
        await self.health.start(runtime.balancers)
        await self.server.listen(settings.proxy_listen, reuse_port=self.reuse_port)
        self.config_hash = runtime.config_hash

    async def apply(
        self, config: Config, hashes: ConfigHash | None = None, change: Change | None = None
    ) -> None:
        server = self.server
        assert server is not None
        # Compiling the router for a large config is long: in a thread, off the event loop
        # (build_runtime is pure; the swap below is one assignment on the loop).
        runtime = await asyncio.to_thread(
            without_gc, build_runtime, config, server.runtime, known_hash=hashes, change=change
        )
        # Resolve new target names and start their probes before any request can pick them.
        await self.health.update(runtime.balancers)
        server.set_runtime(runtime)
        self.config_hash = runtime.config_hash

    async def stats(self) -> dict[str, int]:
        server = self.server
        if server is None:
            return process_memory()
        counters = server.counters
        return {
            "connections_active": counters.active,
            "connections_accepted": counters.accepted,
            "connections_handled": counters.handled,
            "total_requests": counters.total_requests,
            **process_memory(),
        }

    async def metrics(self) -> dict[str, Any]:
        """This process's prometheus counts, and target health when an instance asks for it."""
        server = self.server
        health: list[list[Any]] = []
        if server is not None and wants_upstream_health(server.runtime.config):
            health = [[balancer.name, balancer.health()] for balancer in server.runtime.balancers]
        return {"snapshots": [REGISTRY.snapshot()], "upstream_health": health}

    async def upstream_health(self, name: str, balancer_health: bool) -> Any | None:
        server = self.server
        balancer = server.runtime.balancers.get(name) if server is not None else None
        if balancer is None:
            return None
        return balancer.balancer_health() if balancer_health else balancer.health()

    async def drain(self, grace: float) -> None:
        await self.health.stop()
        if self.server is not None:
            await self.server.drain(grace)
            await self.server.close()
        for name, handler in self.handlers.items():
            try:
                await handler.close_worker()
            except Exception:
                log.exception("plugin.close_failed", plugin=name)
        if self.access_log is not None:
            self.access_log.close()
            self.access_log = None


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()
        self.restarts = 0

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        """One request, one reply line; one call at a time per worker."""
        async with self.lock:
            process = self.process
            if process is None or process.stdin is None or process.stdout is None:
                raise ConnectionError(f"worker {self.index} is not running")
            process.stdin.write(json.dumps(message).encode() + b"\n")
            await process.stdin.drain()
            line = await asyncio.wait_for(process.stdout.readline(), REPLY_TIMEOUT)
            if not line:
                raise ConnectionError(f"worker {self.index} closed its control channel")
            reply: dict[str, Any] = json.loads(line)
            return reply


class WorkerPool:
    """``workers`` processes; the agent writes LMDB first, then asks every worker to reload."""

    def __init__(self, settings: Settings, count: int, worker_argv: Sequence[str] | None = None) -> None:
        self.settings = settings
        self.workers = [_Worker(i) for i in range(count)]
        self.worker_argv = list(worker_argv or [sys.executable, "-m", "zonegate", "worker"])
        self.config_hash = "0" * 32
        self._draining = False
        self._supervisors: list[asyncio.Task[None]] = []

    @property
    def draining(self) -> bool:
        return self._draining

    async def start(self, config: Config, hashes: ConfigHash | None = None) -> None:
        del config, hashes  # workers read them from the LMDB cache the agent has just written
        for worker in self.workers:
            await self._spawn(worker)
        for worker in self.workers:
            reply = await worker.call({"op": "hello"})
            self.config_hash = str(reply.get("config_hash", self.config_hash))
        self._supervisors = [asyncio.get_running_loop().create_task(self._supervise(w)) for w in self.workers]

    async def _spawn(self, worker: _Worker) -> None:
        env = {**os.environ, "ZONEGATE_TEST_WORKER_INDEX": str(worker.index)}
        worker.process = await asyncio.create_subprocess_exec(
            *self.worker_argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # worker logs go where ours go
            env=env,
        )
        log.info("worker.started", index=worker.index, pid=worker.process.pid)

    async def _supervise(self, worker: _Worker) -> None:
        while not self._draining:
            process = worker.process
            if process is None:
                return
            code = await process.wait()
            if self._draining:
                return
            worker.restarts += 1
            log.error(
                "worker.died", index=worker.index, pid=process.pid, exit_code=code, restarts=worker.restarts
            )
            await asyncio.sleep(RESTART_DELAY)
            await self._spawn(worker)
            try:
                await worker.call({"op": "hello"})
            except (ConnectionError, TimeoutError, ValueError) as exc:
                log.error("worker.restart_failed", index=worker.index, error=str(exc))

    async def apply(
        self, config: Config, hashes: ConfigHash | None = None, change: Change | None = None
    ) -> None:
        del config, hashes, change  # already in LMDB
        # All at once: each worker rebuilds on its own core, so a change is live everywhere
        # after one worker's rebuild rather than after all of them in turn.
        replies = await asyncio.gather(*(self._reload(worker) for worker in self.workers))
        for reply in replies:  # in worker order, as before: the last worker that answered wins
            if reply is not None:
                self.config_hash = str(reply.get("config_hash", self.config_hash))

    async def _reload(self, worker: _Worker) -> dict[str, Any] | None:
        """The worker's reply, or None when it did not answer (logged; its supervisor restarts a
        dead worker, which then reads the cache at start)."""
        try:
            return await worker.call({"op": "reload"})
        except (ConnectionError, TimeoutError, ValueError) as exc:
            log.error("worker.reload_failed", index=worker.index, error=str(exc))
            return None

    async def stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for worker in self.workers:
            try:
                reply = await worker.call({"op": "stats"})
            except (ConnectionError, TimeoutError, ValueError):
                continue
            for key, value in reply.get("stats", {}).items():
                total[key] = total.get(key, 0) + int(value)
        return total

    async def upstream_health(self, name: str, balancer_health: bool) -> Any | None:
        for worker in self.workers:
            try:
                reply = await worker.call(
                    {"op": "health", "upstream": name, "balancer_health": balancer_health}
                )
            except (ConnectionError, TimeoutError, ValueError):
                continue
            return reply.get("health")
        return None

    async def metrics(self) -> dict[str, Any]:
        """Every worker counts for itself: the agent asks each and the exporter sums them."""
        snapshots: list[Any] = []
        health: list[Any] = []
        for worker in self.workers:
            try:
                reply = await worker.call({"op": "metrics"})
            except (ConnectionError, TimeoutError, ValueError):
                continue
            collected = reply.get("metrics") or {}
            snapshots += collected.get("snapshots") or []
            health = health or collected.get("upstream_health") or []
        return {"snapshots": snapshots, "upstream_health": health}

    async def drain(self, grace: float) -> None:
        self._draining = True
        for task in self._supervisors:
            task.cancel()
        await asyncio.gather(*self._supervisors, return_exceptions=True)
        for worker in self.workers:
            process = worker.process
            if process is None or process.returncode is not None:
                continue
            try:
                await asyncio.wait_for(worker.call({"op": "drain", "grace": grace}), 2.0)
            except (ConnectionError, TimeoutError, ValueError):
                process.terminate()
        for worker in self.workers:
            process = worker.process
            if process is None:
                continue
            try:
                await asyncio.wait_for(process.wait(), grace + 5)
            except TimeoutError:
                process.kill()
                await process.wait()
