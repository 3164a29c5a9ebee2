"""Connections to upstream servers and the keep-alive pool that reuses them.

Invariants:
- A connection serves one exchange at a time; it goes back to the pool only after a complete
  response on a keep-alive connection, and is closed (never pooled) after anything else: an
  error, a parse failure, a client that went away mid-response, an upgrade.
- The pool is keyed by everything that makes two connections interchangeable (address, TLS
  context and server name), holds at most ``max_idle`` idle connections per key, closes those
  idle longer than ``idle_timeout``, and retires a connection after ``max_requests`` exchanges,
  like Kong's ``upstream_keepalive_*`` settings.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

import httptools
import structlog

if TYPE_CHECKING:
    from zonegate.data_plane.exchange import Exchange

log = structlog.get_logger(__name__)

# Connection header values that are not names of other headers.
STANDARD_CONNECTION_TOKENS: Final = frozenset({b"close", b"keep-alive", b"upgrade", b""})

PoolKey = tuple[str, int, int, str | None]  # host, port, id of the TLS context (0 = plain), server name

SWEEP_INTERVAL: Final = 5.0


class UpstreamConnection(asyncio.Protocol):
    """One TCP (or TLS) connection to an upstream; parses responses and hands them to its exchange."""

    __slots__ = (
        "closed",
        "exchange",
        "idle_since",
        "key",
        "parser",
        "pool",
        "requests",
        "transport",
        "tunnel",
    )

    def __init__(self, pool: UpstreamPool, key: PoolKey) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.requests = 0
        self.idle_since = 0.0
        self.closed = False
        self.tunnel = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # An idle keep-alive connection must not talk; whatever it says, drop it.
            self.close()
            return
        if self.tunnel:
            exchange.upstream_tunnel_data(data)
            return
        exchange.upstream_begin()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0]
            self.tunnel = True
            if exchange is self.exchange and offset < len(data):
                exchange.upstream_tunnel_data(data[offset:])
        except httptools.HttpParserError:
            if self.exchange is not None:
                self.exchange.upstream_failed("invalid response")
            self.close()
        finally:
            exchange.upstream_flush()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange = self.exchange
        self.exchange = None
        if exchange is not None:
            exchange.upstream_lost(self)
        else:
            self.pool.forget(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.pause_client_reading()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.resume_client_reading()

    # -- httptools callbacks --------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.response_headers.append((name, value))
            if len(name) == 10 and name.lower() == b"connection":
                tokens = frozenset(t.strip() for t in value.lower().split(b",")) - STANDARD_CONNECTION_TOKENS
                if tokens:
                    exchange.response_connection_tokens = (
                        exchange.response_connection_tokens or frozenset()
                    ) | tokens

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_headers_complete(
                self.parser.get_status_code(), self.parser.should_keep_alive()
            )

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.upstream_body(body)

    def on_message_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_message_complete(self.parser.should_keep_alive())

    # -- use -------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        self.exchange = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
        self.pool.forget(self)

    def abort(self) -> None:
        self.exchange = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()
        self.pool.forget(self)


class UpstreamPool:
    """Idle keep-alive connections per upstream address, plus the one place that opens new ones."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_idle: int = 512,
        max_requests: int = 10000,
        idle_timeout: float = 60.0,
    ) -> None:
        self.loop = loop
        self.max_idle = max_idle
        self.max_requests = max_requests
        self.idle_timeout = idle_timeout
        self.idle: dict[PoolKey, deque[UpstreamConnection]] = {}
        self.active: set[UpstreamConnection] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def acquire(self, key: PoolKey) -> UpstreamConnection | None:
        """An idle connection for this key, or None: the caller then connects."""
        queue = self.idle.get(key)
        while queue:
            connection = queue.pop()  # most recently used: its peer is the least likely to have closed it
            if not connection.closed:
                self.active.add(connection)
                return connection
        return None

    async def connect(
        self,
        key: PoolKey,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        timeout: float,  # noqa: ASYNC109 - the service's connect_timeout, applied right here
    ) -> UpstreamConnection:
        """Open a new connection; OSError or TimeoutError become a retry, a 502 or a 504."""
        factory: Callable[[], UpstreamConnection] = lambda: UpstreamConnection(self, key)  # noqa: E731
        extra: dict[str, Any] = {}
        if ssl_context is not None:
            extra = {"ssl": ssl_context, "server_hostname": server_hostname or host}
        async with asyncio.timeout(timeout):
            _, protocol = await self.loop.create_connection(factory, host, port, **extra)
        self.active.add(protocol)
        return protocol

    def release(self, connection: UpstreamConnection) -> None:
        """Back to the pool after a complete keep-alive exchange, unless retired or the pool is full."""
        self.active.discard(connection)
        connection.exchange = None
        connection.requests += 1
        if connection.closed or connection.requests >= self.max_requests:
            connection.close()
            return
        queue = self.idle.setdefault(connection.key, deque())
        if len(queue) >= self.max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        queue.append(connection)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def forget(self, connection: UpstreamConnection) -> None:
        self.active.discard(connection)
        queue = self.idle.get(connection.key)
        if queue is not None and connection in queue:
            queue.remove(connection)

    def _sweep(self) -> None:
        self._sweeper = None
        deadline = time.monotonic() - self.idle_timeout
        for key, queue in list(self.idle.items()):
            while queue and queue[0].idle_since < deadline:
                queue.popleft().close()
            if not queue:
                del self.idle[key]
        if self.idle:
            self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for queue in list(self.idle.values()):
            for connection in list(queue):
                connection.close()
        self.idle.clear()
        for connection in list(self.active):
            connection.abort()
        self.active.clear()
