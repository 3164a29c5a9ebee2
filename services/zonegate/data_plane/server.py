"""One proxy worker: its listeners, its connections, its upstream pool, and the runtime it serves.

``set_runtime`` swaps the whole config in one assignment; connections read ``server.runtime``
when a request starts, so a request runs start to end on one config. ``drain`` stops taking
connections and requests, lets in-flight exchanges finish within a grace period, then closes
what is left.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import structlog

from zonegate.data_plane.access_log import AccessLog
from zonegate.data_plane.client import ClientConnection
from zonegate.data_plane.exchange import Exchange
from zonegate.data_plane.runtime import Runtime
from zonegate.data_plane.tls import CertificateSelector
from zonegate.data_plane.upstream import UpstreamPool
from zonegate.settings import Listen

log = structlog.get_logger(__name__)

IDLE_CHECK_INTERVAL: Final = 1.0
# How often exchanges waiting on an upstream are checked against their read_timeout; a timeout
# fires up to this much late, which Kong's millisecond timeouts tolerate at proxy scale.
TIMEOUT_CHECK_INTERVAL: Final = 0.1


class TaskSet:
    """Background tasks a worker owns: kept referenced, cancelled and awaited on stop."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task.failed", error=repr(task.exception()))

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


@dataclass(slots=True)
class Counters:
    accepted: int = 0
    handled: int = 0
    active: int = 0
    total_requests: int = 0


class ProxyServer:
    def __init__(
        self,
        runtime: Runtime,
        *,
        access_log: AccessLog | None = None,
        certificates: CertificateSelector | None = None,
        pool_size: int = 512,
        pool_max_requests: int = 10000,
        pool_idle_timeout: float = 60.0,
        trusted_ips: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
        real_ip_header: str = "X-Real-IP",
        real_ip_recursive: bool = False,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.runtime = runtime
        self.access_log = access_log
        self.certificates = certificates
        self.pool = UpstreamPool(
            self.loop, max_idle=pool_size, max_requests=pool_max_requests, idle_timeout=pool_idle_timeout
        )
        self.tasks = TaskSet()
        self.connections: set[ClientConnection] = set()
        self.listeners: list[asyncio.AbstractServer] = []
        self.counters = Counters()
        self.draining = False
        # Kong's trusted_ips: from these peers, X-Forwarded-* and the real-IP header are believed.
        self.trusted_ips = trusted_ips
        self.real_ip_header = real_ip_header.lower().encode("latin-1")
        self.real_ip_recursive = real_ip_recursive
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(8).hex()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._timeout_timer: asyncio.TimerHandle | None = None
        self.waiting: set[Exchange] = set()
        if certificates is not None:
            self.update_certificates()

    # -- config -------------------------------------------------------------------------------------

    def set_runtime(self, runtime: Runtime) -> None:
        previous = self.runtime
        self.runtime = runtime
        if self.certificates is not None and (
            previous.config.of("certificates") != runtime.config.of("certificates")
            or previous.config.of("snis") != runtime.config.of("snis")
        ):
            self.update_certificates()

    def update_certificates(self) -> None:
        assert self.certificates is not None
        self.certificates.update(self.runtime.config.of("certificates"), self.runtime.config.of("snis"))

    # -- listening ------------------------------------------------------------------------------------

    async def listen(self, listeners: tuple[Listen, ...], *, reuse_port: bool = False) -> None:
        for listen in listeners:
            ssl_context = None
            if listen.ssl:
                if self.certificates is None:
                    raise ValueError(f"{listen} asks for ssl but no certificate is configured")
                ssl_context = self.certificates.default
            scheme = "https" if listen.ssl else "http"
            factory: Callable[[], ClientConnection] = partial(ClientConnection, self, scheme)
            server = await self.loop.create_server(
                factory,
                host=listen.host,
                port=listen.port,
                ssl=ssl_context,
                reuse_port=reuse_port or listen.reuseport,
                backlog=listen.backlog or 511,
                family=socket.AF_INET6 if ":" in listen.host else socket.AF_INET,
            )
            self.listeners.append(server)
        self._idle_timer = self.loop.call_later(IDLE_CHECK_INTERVAL, self._check_idle)
        self._timeout_timer = self.loop.call_later(TIMEOUT_CHECK_INTERVAL, self._check_timeouts)

    def _check_timeouts(self) -> None:
        if self.waiting:
            now = time.monotonic()
            for exchange in list(self.waiting):
                exchange.check_timeout(now)
        self._timeout_timer = self.loop.call_later(TIMEOUT_CHECK_INTERVAL, self._check_timeouts)

    # -- connection bookkeeping ------------------------------------------------------------------------

    def connection_opened(self, connection: ClientConnection) -> None:
        self.connections.add(connection)
        self.counters.accepted += 1
        self.counters.handled += 1
        self.counters.active += 1
        if self.draining:
            connection.stop_accepting()

    def connection_closed(self, connection: ClientConnection) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            self.counters.active -= 1

    def is_trusted(self, peer_ip: str) -> bool:
        if not self.trusted_ips or not peer_ip:
            return False
        try:
            address = ipaddress.ip_address(peer_ip)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_ips)

    def next_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):016x}"

    def exchange_finished(self, exchange: Exchange) -> None:
        self.counters.total_requests += 1
        if self.access_log is not None:
            self.access_log.write(exchange)

    def _check_idle(self) -> None:
        now = time.monotonic()
        for connection in list(self.connections):
            connection.check_idle(now)
        self._idle_timer = self.loop.call_later(IDLE_CHECK_INTERVAL, self._check_idle)

    # -- stopping ---------------------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish for up to ``grace`` seconds, then close."""
        self.draining = True
        for server in self.listeners:
            server.close()
        for connection in list(self.connections):
            connection.stop_accepting()
        deadline = time.monotonic() + grace
        # Polling keeps connection bookkeeping free of drain-only signalling on the hot path.
        while self.connections and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await self.close()

    async def close(self) -> None:
        for timer in (self._idle_timer, self._timeout_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._timeout_timer = None
        self.waiting.clear()
        for server in self.listeners:
            server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        self.connections.clear()
        self.pool.close()
        await self.tasks.stop()
        for server in self.listeners:
            await server.wait_closed()
        self.listeners.clear()
        if self.access_log is not None:
            self.access_log.flush()
