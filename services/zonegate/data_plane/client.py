"""The downstream side: one client connection, parsed with httptools, exchanges answered in order.

HTTP/1.1 lets a client pipeline requests; responses must come back in request order, so
exchanges queue here and only the head one talks to an upstream. Writes produced while
handling one read are gathered and leave in one ``transport.write`` (DESIGN.md section 7: a
second write per response costs 30-40%).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Final, cast

import httptools
import structlog

from zonegate.data_plane import responses
from zonegate.data_plane.exchange import Exchange
from zonegate.data_plane.upstream import STANDARD_CONNECTION_TOKENS

if TYPE_CHECKING:
    from zonegate.data_plane.server import ProxyServer

log = structlog.get_logger(__name__)

_HOST: Final = b"host"
_CONTENT_LENGTH: Final = b"content-length"
_TRANSFER_ENCODING: Final = b"transfer-encoding"
_EXPECT: Final = b"expect"
_CONNECTION: Final = b"connection"
# Back-pressure should keep a client's unsent bytes near the transport's high-water mark; if they
# ever grow past this, something missed a pause: pause the upstream again and say so.
WRITE_BUFFER_CAP: Final = 8 * 1024 * 1024


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing an oversized request head."""


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "accepting",
        "batching",
        "closed",
        "forwarded_block",
        "header_bytes",
        "last_activity",
        "loop",
        "out",
        "parser",
        "parsing",
        "peer_bytes",
        "peer_ip",
        "pool",
        "queue",
        "reading_paused",
        "rejected",
        "scheme",
        "scheme_bytes",
        "server",
        "server_port_bytes",
        "sni",
        "tasks",
        "transport",
        "trusted",
        "tunnel",
        "upgrade_data",
        "upgrading",
        "writing_paused",
    )

    def __init__(self, server: ProxyServer, scheme: str) -> None:
        self.server = server
        self.loop = server.loop
        self.pool = server.pool
        self.tasks = server.tasks
        self.scheme = scheme
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.parsing: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.out: list[bytes] = []
        self.batching = False
        self.reading_paused = False
        self.rejected = False
        self.writing_paused = False
        self.closed = False
        self.accepting = True
        self.tunnel: Exchange | None = None
        self.upgrading = False
        self.upgrade_data = b""
        self.header_bytes = 0
        self.peer_ip = ""
        self.peer_bytes = b""
        self.scheme_bytes = scheme.encode()
        self.server_port_bytes = b""
        self.forwarded_block = b""
        self.sni: str | None = None
        self.trusted = False
        self.last_activity = time.monotonic()

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else ""
        self.trusted = self.server.is_trusted(self.peer_ip)
        sock = transport.get_extra_info("sockname")
        self.server_port_bytes = str(sock[1]).encode() if sock else b""
        self.peer_bytes = self.peer_ip.encode("latin-1")
        # The forwarding headers that depend only on this connection, rendered once for all its requests.
        self.forwarded_block = (
            b"X-Real-IP: %s\r\nX-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Port: %s\r\n"
            % (self.peer_bytes, self.peer_bytes, self.scheme_bytes, self.server_port_bytes)
        )
        if self.scheme == "https":
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                certificates = self.server.certificates
                if certificates is not None:
                    self.sni = certificates.server_names.pop(id(ssl_object), None)
        self.server.connection_opened(self)

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self.tunnel is not None:
            self.tunnel.client_tunnel_data(data)
            return
        if self.upgrading:
            # Bytes after an upgrade request, before the upstream agreed: raw, not HTTP; hold them.
            self.upgrade_data += data
            return
        if self.rejected:
            return  # after a malformed request nothing more is parsed; the connection closes
        self.batching = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.upgrading = True
            self.upgrade_data = data[upgrade.args[0] :]
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raises; the cause tells an oversized head apart.
            if isinstance(exc.__context__, _HeadTooLarge) or isinstance(exc, _HeadTooLarge):
                self._reject(responses.STATUS_HEADERS_TOO_LARGE, responses.HEADERS_TOO_LARGE)
            else:
                self._reject(400, responses.BAD_REQUEST)
        except _HeadTooLarge:
            self._reject(responses.STATUS_HEADERS_TOO_LARGE, responses.HEADERS_TOO_LARGE)
        finally:
            self.flush()

    def eof_received(self) -> bool | None:
        # The client half-closed: a request still being read can never complete, so drop it;
        # answer what is complete (keep the transport open for that), then close.
        self.accepting = False
        partial = self.parsing
        self.parsing = None
        if partial is not None:
            partial.client_lost()
        if not self.queue:
            return None
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for exchange in list(self.queue):
            exchange.client_lost()
        if self.parsing is not None and self.parsing not in self.queue:
            self.parsing.client_lost()
        self.queue.clear()
        self.parsing = None
        self.server.connection_closed(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        head = self.queue[0] if self.queue else self.tunnel
        if head is not None and head.upstream is not None:
            head.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        head = self.queue[0] if self.queue else self.tunnel
        if head is not None and head.upstream is not None:
            head.upstream.resume_reading()

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.parsing = Exchange(self, self.server.runtime, self.server.next_request_id())
        self.header_bytes = 0

    def on_url(self, url: bytes) -> None:
        exchange = self.parsing
        assert exchange is not None
        exchange.url += url
        self.header_bytes += len(url)
        if self.header_bytes > exchange.runtime.limits.max_header_bytes:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.parsing
        assert exchange is not None
        limits = exchange.runtime.limits
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > limits.max_header_bytes or len(exchange.headers) >= limits.max_headers:
            raise _HeadTooLarge
        exchange.headers.append((name, value))
        length = len(name)
        # Only a few headers matter to the proxy itself; compare by length first to skip most.
        if length == 4 and name.lower() == _HOST:
            exchange.host = value.decode("latin-1")
        elif length == 14 and name.lower() == _CONTENT_LENGTH:
            exchange.content_length = int(value) if value.isdigit() else None
        elif length == 17 and name.lower() == _TRANSFER_ENCODING:
            exchange.chunked_request = b"chunked" in value.lower()
        elif length == 6 and name.lower() == _EXPECT:
            exchange.expect_continue = value.lower() == b"100-continue"
        elif length == 10 and name.lower() == _CONNECTION:
            tokens = frozenset(t.strip() for t in value.lower().split(b",")) - STANDARD_CONNECTION_TOKENS
            if tokens:
                exchange.connection_tokens = (exchange.connection_tokens or frozenset()) | tokens

    def on_headers_complete(self) -> None:
        exchange = self.parsing
        assert exchange is not None
        parser = self.parser
        exchange.method = parser.get_method()
        exchange.http_minor = 0 if parser.get_http_version() == "1.0" else 1
        exchange.keep_alive = parser.should_keep_alive() and self.accepting
        exchange.upgrade = parser.should_upgrade()
        url = exchange.url
        if url[:1] != b"/":
            url = self._origin_form(exchange, url)
        path, _, query = url.partition(b"?")
        path, _, _ = path.partition(b"#")
        exchange.path = path.decode("latin-1")
        exchange.query = query
        if exchange.chunked_request:
            exchange.content_length = None
        self.queue.append(exchange)
        if len(self.queue) == 1:
            exchange.start()
        elif len(self.queue) > 8:
            self.pause_reading()  # a client pipelining far ahead waits for answers first

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.client_body(body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        self.parsing = None
        if exchange is not None:
            exchange.client_body_complete()

    @staticmethod
    def _origin_form(exchange: Exchange, url: bytes) -> bytes:
        """An absolute-form target (``GET http://host/path``): take host and path from it."""
        try:
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            return b"/"
        if parsed.host and exchange.host is None:
            host = parsed.host.decode("latin-1")
            exchange.host = f"{host}:{parsed.port}" if parsed.port else host
        path = parsed.path or b"/"
        return path + (b"?" + parsed.query if parsed.query else b"")

    # -- used by exchanges ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.out.append(data)
        if not self.batching:
            self.flush()

    def flush(self) -> None:
        self.batching = False
        if not self.out:
            return
        out = self.out
        self.out = []
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            if transport.get_write_buffer_size() > WRITE_BUFFER_CAP:
                log.warning(
                    "client.write_buffer_over_cap",
                    buffered=transport.get_write_buffer_size(),
                    writing_paused=self.writing_paused,
                    queue=len(self.queue),
                )
                self.writing_paused = True
                self.pause_writing()

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def start_tunnel(self, exchange: Exchange) -> None:
        self.tunnel = exchange
        self.upgrading = False
        pending = self.upgrade_data
        self.upgrade_data = b""
        if pending:
            exchange.client_tunnel_data(pending)

    def close(self) -> None:
        self.flush()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def exchange_finished(self, exchange: Exchange, *, client_gone: bool) -> None:
        self.server.exchange_finished(exchange)
        if self.queue and self.queue[0] is exchange:
            self.queue.popleft()
        elif exchange in self.queue:
            self.queue.remove(exchange)
        if client_gone or self.closed:
            return
        if self.tunnel is exchange:
            self.close()
            return
        if not exchange.keep_alive or self.upgrading:
            self.close()
            return
        self.resume_reading()
        if self.queue:
            self.queue[0].start()
        elif not self.accepting and self.parsing is None:
            self.close()

    def _reject(self, status: int, message: str) -> None:
        """A request we cannot parse: answer it in its turn (after the complete ones before it), then close.

        As nginx does, requests pipelined before the bad one still get their answers.
        """
        exchange = self.parsing
        self.parsing = None
        # Not ``accepting = False``: the complete requests before this one keep their keep-alive
        # answers; this one answers with Connection: close, and nothing after it is parsed.
        self.rejected = True
        self.pause_reading()
        if exchange is None:
            exchange = Exchange(self, self.server.runtime, self.server.next_request_id())
        elif exchange.response_head_sent:
            self.close()
            return
        exchange.keep_alive = False
        exchange.pending_error = (status, message)
        if exchange not in self.queue:
            self.queue.append(exchange)
        if self.queue[0] is exchange:
            exchange.respond_error(status, message, close=True)

    # -- idle and slow clients ----------------------------------------------------------------------

    def check_idle(self, now: float) -> None:
        """Called about once a second by the server: close idle keep-alive and too-slow clients."""
        if self.closed or self.tunnel is not None:
            return
        limits = self.server.runtime.limits
        idle = now - self.last_activity
        parsing = self.parsing
        if parsing is not None:
            # A head still arriving, or a body that stopped arriving (nginx's two client timeouts).
            in_body = parsing in self.queue
            if idle > (limits.body_timeout if in_body else limits.header_timeout):
                self._reject(408, responses.REQUEST_TIMEOUT)
        elif not self.queue and (idle > limits.keepalive_timeout or not self.accepting):
            self.close()

    def stop_accepting(self) -> None:
        """Draining: finish in-flight exchanges, take no new request on this connection."""
        self.accepting = False
        if not self.queue and self.parsing is None:
            self.close()
