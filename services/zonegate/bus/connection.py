"""One NATS connection per node: mTLS only, reconnecting forever, re-syncing after every reconnect.

A node must start and serve without the bus (a data plane from its cache, a control plane's
Admin API), so the connection is made in the background and retried forever, with capped
exponential backoff and full jitter so a thousand data planes do not reconnect in step after a
NATS restart. nats-py reconnects by itself once connected; its server choice is routed through
the same backoff. After the first connect and after every reconnect, ``on_connect`` runs: the
caller re-reads what it may have missed (the latest snapshot) instead of trusting that a
subscription survived (DESIGN section 3, watchdog; nats-io/nats.py issue 510).

``last_error`` is what the node reports about its link (``/status``, heartbeats): an error that
is about the link (a cut connection, a refused reconnect) lasts until the link is back, a failed
re-read after a reconnect until a retry succeeds, then it is cleared; one the server reports on
a working link (a permission violation, a slow consumer) stays until something replaces it.
Errors about config (a refused snapshot) are not kept here but in the data plane's sync state.
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
from nats import errors as nats_errors
from nats.aio.client import Client

from zonegate.bus.tls import ClientTls
from zonegate.settings import Settings

log = structlog.get_logger(__name__)

OnConnect = Callable[[], Awaitable[None]]

_BASE_DELAY: Final = 0.25
_CONNECT_TIMEOUT: Final = 3
_CLOSE_TIMEOUT: Final = 3.0
# What nats-py reports when the link itself fails (read EOF, refused or timed-out dials, pings
# unanswered, TLS failures are OSErrors): cleared once reconnected.
_LINK_ERRORS: Final = (
    OSError,
    asyncio.TimeoutError,
    nats_errors.StaleConnectionError,  # includes UnexpectedEOF
    nats_errors.ConnectionClosedError,
    nats_errors.NoServersError,
    nats_errors.AuthorizationError,
    nats_errors.SecureConnFailedError,
)


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
        self._link_error = False  # last_error is about the link: clear it once reconnected

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
                self._set_error(f"cannot connect to the bus: {exc!r}", link=True)
                log.warning("bus.connect_failed", error=repr(exc), retry_in=round(delay, 2), attempt=attempt)
                attempt += 1
                await asyncio.sleep(delay)
        log.info("bus.connected", server=self._server_url(), name=self.options.name)
        self._set_error("", link=False)
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
        """Run ``on_connect``; retried while connected (JetStream may still be recovering after a
        server restart), and its error cleared once it succeeds. A lost link ends the retries:
        the next reconnect starts again."""
        if self._on_connect is None:
            return
        attempt = 0
        while True:
            try:
                await self._on_connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a resync must not kill the node
                self._set_error(f"resync failed: {exc!r}", link=True)
                log.exception("bus.resync_failed", error=repr(exc), attempt=attempt)
                if not self.is_connected:
                    return
                await asyncio.sleep(backoff_delay(attempt, cap=self.options.max_backoff))
                attempt += 1
                continue
            if self._link_error and self.is_connected:
                log.info("bus.error_cleared", error=self.last_error)
                self._set_error("", link=False)
            return

    def _set_error(self, message: str, *, link: bool) -> None:
        self.last_error, self._link_error = message, link

    async def _on_error(self, exc: Exception) -> None:
        # Anything reported while the link is down belongs to the outage, whatever its type.
        link = isinstance(exc, _LINK_ERRORS) or not self.is_connected
        self._set_error(repr(exc), link=link)
        log.warning("bus.error", error=repr(exc))

    async def _on_disconnected(self) -> None:
        self.connected.clear()
        log.warning("bus.disconnected")

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        if self._link_error:
            log.info("bus.error_cleared", error=self.last_error)
            self._set_error("", link=False)
        self.connected.set()
        log.info("bus.reconnected", server=self._server_url(), reconnects=self.reconnects)
        task = asyncio.get_running_loop().create_task(self._resync(), name="bus-resync")
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)
