"""One NATS connection per node: mTLS only, reconnecting forever, re-syncing after every reconnect.

A node must start and serve without the bus (a data plane from its cache, a control plane's
Admin API), so the connection is made in the background and retried forever, with capped
exponential backoff and full jitter so a thousand data planes do not reconnect in step after a
NATS restart. nats-py reconnects by itself once connected; its server choice is routed through
the same backoff. After the first connect and after every reconnect, ``on_connect`` runs: the
caller re-reads what it may have missed (the latest snapshot) instead of trusting that a
subscription survived (DESIGN section 3, watchdog; nats-io/nats.py issue 510).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import nats
import structlog
from nats.aio.client import Client

from zonegate.bus.tls import ClientTls
from zonegate.settings import Settings

log = structlog.get_logger(__name__)

OnConnect = Callable[[], Awaitable[None]]

_BASE_DELAY: Final = 0.25
_CONNECT_TIMEOUT: Final = 3
_CLOSE_TIMEOUT: Final = 3.0


def backoff_delay(attempt: int, *, cap: float, base: float = _BASE_DELAY) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^attempt)] (AWS architecture blog's advice)."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return random.uniform(0, ceiling)


@dataclass(frozen=True, slots=True)
class BusOptions:
    servers: Sequence[str]
    tls: ssl.SSLContext
    tls_hostname: str | None
    name: str
    js_domain: str | None = None
    max_backoff: float = 5.0
    ping_interval: int = 10  # seconds; two missed pings mark the server dead (a cut link sends no RST)


def node_options(settings: Settings, tls: ClientTls, *, role: str, node_id: str) -> BusOptions:
    """A node's bus options from its settings; the connection name shows in NATS monitoring."""
    return BusOptions(
        servers=settings.cluster_nats_url,
        tls=tls.context,
        tls_hostname=tls.hostname,
        name=f"zonegate-{role}-{socket.gethostname()}-{node_id[:8]}",
        js_domain=settings.cluster_js_domain,
    )


class BusConnection:
    """Owns the NATS client; use ``start``/``close`` (or ``async with``)."""

    def __init__(self, options: BusOptions, on_connect: OnConnect | None = None) -> None:
        self.options = options
        self._on_connect = on_connect
        self._nc: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._resyncs: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.last_error = ""

    @property
    def client(self) -> Client:
        if self._nc is None:
            raise RuntimeError("the bus is not connected yet")
        return self._nc

    def jetstream(self) -> Any:
        return self.client.jetstream(domain=self.options.js_domain, timeout=5)

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._connect_forever(), name="bus-connect")

    async def wait_connected(self) -> None:
        await self.connected.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_TIMEOUT):  # never let the bus hold up a shutdown
                    await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._resyncs):
            task.cancel()
        await asyncio.gather(*self._resyncs, return_exceptions=True)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await self._nc.close()
        self.connected.clear()

    async def __aenter__(self) -> BusConnection:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- internals --------------------------------------------------------------------------------

    async def _connect_forever(self) -> None:
        attempt = 0
        while True:
            try:
                self._nc = await nats.connect(
                    servers=list(self.options.servers),
                    name=self.options.name,
                    tls=self.options.tls,
                    tls_hostname=self.options.tls_hostname,
                    connect_timeout=_CONNECT_TIMEOUT,
                    allow_reconnect=True,
                    # During this first connect nats-py would retry forever inside connect(),
                    # busy-looping, so it tries each server once and this loop backs off; once
                    # connected, reconnects are forever (set below), through _choose_server.
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.5,
                    reconnect_to_server_handler=self._choose_server,
                    ping_interval=self.options.ping_interval,
                    max_outstanding_pings=2,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                self._nc.options["max_reconnect_attempts"] = -1
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff_delay(attempt, cap=self.options.max_backoff)
                self.last_error = f"cannot connect to the bus: {exc!r}"
                log.warning("bus.connect_failed", error=repr(exc), retry_in=round(delay, 2), attempt=attempt)
                attempt += 1
                await asyncio.sleep(delay)
        log.info("bus.connected", server=self._server_url(), name=self.options.name)
        self.last_error = ""
        self.connected.set()
        await self._resync()

    def _choose_server(self, servers: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
        server = random.choice(servers)
        return server, backoff_delay(int(getattr(server, "reconnects", 0)), cap=self.options.max_backoff)

    def _server_url(self) -> str:
        nc = self._nc
        if nc is None or nc.connected_url is None:
            return ""
        return str(nc.connected_url.netloc)

    async def _resync(self) -> None:
        if self._on_connect is None:
            return
        try:
            await self._on_connect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the watchdog will try again; a resync must not kill the node
            self.last_error = f"resync failed: {exc!r}"
            log.exception("bus.resync_failed", error=repr(exc))

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = repr(exc)
        log.warning("bus.error", error=repr(exc))

    async def _on_disconnected(self) -> None:
        self.connected.clear()
        log.warning("bus.disconnected")

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        self.connected.set()
        log.info("bus.reconnected", server=self._server_url(), reconnects=self.reconnects)
        task = asyncio.get_running_loop().create_task(self._resync(), name="bus-resync")
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)
