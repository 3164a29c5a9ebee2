"""One request/response exchange through the proxy: route, pick a target, stream both ways.

The downstream connection (``client.py``) parses the request and feeds the exchange; the
upstream connection (``upstream.py``) parses the response and feeds it back. No task runs
per request: everything is a callback, except opening a new upstream connection, which
awaits and is rare with keep-alive.

Invariants:
- Bytes go out in order and at most one response is written per request, even on errors:
  once the response head has been sent, an error can only close the connection.
- Back-pressure is symmetric: a side whose transport asks to pause writing pauses reading on
  the other side; pausing or resuming twice is harmless.
- The upstream connection goes back to the pool only after a complete response on a
  keep-alive connection with the request fully sent; anything else closes it.
- Bodies are streamed. With ``request_buffering`` or ``response_buffering`` (Kong's defaults)
  up to ``Limits.buffer_bytes`` are gathered first, which lets a small response leave in one
  write and a small request be retried on another target; past that limit the exchange streams.
  A plugin's ``body`` phase gets the whole response body the same way (whatever the route's
  buffering), and a body past the limit streams untouched.
- Requests without plugins never touch the plugin machinery: one ``plugin_ctx is None`` check
  per phase boundary.
"""

from __future__ import annotations

import ssl
import time
from typing import TYPE_CHECKING, Final

import httptools
import structlog

from zonegate.data_plane import responses
from zonegate.data_plane.balancer import NewHashCookie
from zonegate.data_plane.plugin_phases import (
    AccessRun,
    PluginRequest,
    local_response,
    run_body,
    run_log,
    run_response,
)
from zonegate.data_plane.responses import VIA_TOKEN
from zonegate.data_plane.upstream import PoolKey, UpstreamConnection
from zonegate.plugins.api import PluginContext
from zonegate.plugins.chains import EMPTY as EMPTY_CHAIN
from zonegate.plugins.chains import Chain

if TYPE_CHECKING:
    import asyncio

    from zonegate.data_plane.balancer import Address, UpstreamBalancer
    from zonegate.data_plane.client import ClientConnection
    from zonegate.data_plane.router import Match
    from zonegate.data_plane.runtime import Runtime, ServicePlan

log = structlog.get_logger(__name__)

Header = tuple[bytes, bytes]

# Hop-by-hop headers (RFC 9110 section 7.6.1) are the proxy's own business on each side.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
    }
)
# Headers the proxy sets itself on the upstream request (Kong's nginx template does the same).
REPLACED_UPSTREAM: Final = frozenset(
    {
        b"host",
        b"x-real-ip",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-path",
        b"x-forwarded-prefix",
        b"expect",
        b"content-length",
    }
)
# What the proxy never copies from the client: hop-by-hop headers and the ones it sets itself.
PROXY_OWNED: Final = HOP_BY_HOP | REPLACED_UPSTREAM
UPSTREAM_HEAD: Final = (
    b"%s %s HTTP/1.1\r\n%sHost: %s\r\n%sX-Forwarded-Host: %s\r\nX-Forwarded-Path: %s\r\n%sVia: "
    + VIA_TOKEN
    + b"\r\n%s%s\r\n"
)
RESPONSE_OWNED: Final = HOP_BY_HOP | {b"content-length"}


def _length_mask(names: frozenset[bytes]) -> int:
    """Bit n set when some name is n bytes long: a header whose name length has no bit set is
    none of them, known without lowering its name (names here are all shorter than 64)."""
    return sum(1 << n for n in {len(name) for name in names})


PROXY_OWNED_LENGTHS: Final = _length_mask(PROXY_OWNED)
RESPONSE_OWNED_LENGTHS: Final = _length_mask(RESPONSE_OWNED)
VIA_LINE: Final = b"Via: " + VIA_TOKEN + b"\r\n"
LATENCY_LINES: Final = b"X-Zonegate-Upstream-Latency: %d\r\nX-Zonegate-Proxy-Latency: %d\r\n"
KEEP_ALIVE_END: Final = b"Connection: keep-alive\r\n\r\n"
CLOSE_END: Final = b"Connection: close\r\n\r\n"
NO_BODY_STATUSES: Final = frozenset({204, 304})
NON_IDEMPOTENT: Final = frozenset({b"POST", b"PATCH", b"LOCK"})
CRLF: Final = b"\r\n"
COLON_SPACE: Final = b": "
LAST_CHUNK: Final = b"0\r\n\r\n"


class Exchange:
    """Per-request state; small and slotted, created once per request."""

    __slots__ = (
        "attempts",
        "balancer",
        "body_bytes_in",
        "body_bytes_out",
        "body_limit",
        "body_waiter",
        "buffered_request",
        "buffered_response",
        "buffering_request",
        "buffering_response",
        "chunked_request",
        "client",
        "connecting",
        "connection_tokens",
        "content_length",
        "done",
        "expect_continue",
        "hash_cookie",
        "hash_key",
        "head_sent_upstream",
        "headers",
        "host",
        "http_minor",
        "keep_alive",
        "last_target",
        "match",
        "method",
        "path",
        "pending_error",
        "plugin_chain",
        "plugin_ctx",
        "query",
        "rechunk_response",
        "replay_body",
        "request_complete",
        "request_id",
        "response_connection_tokens",
        "response_head_sent",
        "response_headers",
        "runtime",
        "service",
        "started",
        "status",
        "target",
        "tried",
        "upgrade",
        "upstream",
        "upstream_done",
        "upstream_first_byte",
        "upstream_keep_alive",
        "upstream_last_io",
        "upstream_sent_at",
        "upstream_status",
        "url",
    )

    def __init__(self, client: ClientConnection, runtime: Runtime, request_id: str) -> None:
        self.client = client
        self.runtime = runtime
        self.request_id = request_id
        self.started = time.monotonic()
        self.method = b"GET"
        self.url = b""
        self.path = "/"
        self.query = b""
        self.headers: list[Header] = []
        self.host: str | None = None
        self.http_minor = 1
        self.keep_alive = True
        self.content_length: int | None = None
        self.chunked_request = False
        self.connection_tokens: frozenset[bytes] | None = None
        self.response_connection_tokens: frozenset[bytes] | None = None
        self.pending_error: tuple[int, str] | None = None
        self.expect_continue = False
        self.upgrade = False
        self.match: Match | None = None
        self.service: ServicePlan | None = None
        self.balancer: UpstreamBalancer | None = None
        self.target: Address | None = None
        self.last_target: Address | None = None
        self.tried: frozenset[Address] = frozenset()
        self.attempts = 0
        self.hash_key: str | None = None
        self.hash_cookie: str | None = None
        self.upstream: UpstreamConnection | None = None
        self.connecting = False
        self.head_sent_upstream = False
        self.buffering_request = False
        self.buffered_request: list[bytes] = []
        self.request_complete = False
        self.response_headers: list[Header] = []
        self.buffering_response = False
        self.buffered_response: list[bytes] = []
        self.rechunk_response = False
        self.replay_body: bytes | None = None
        self.response_head_sent = False
        self.upstream_status = 0
        self.upstream_keep_alive = False
        self.upstream_done = False
        self.upstream_sent_at = 0.0
        self.upstream_first_byte = 0.0
        self.upstream_last_io = 0.0
        self.status = 0
        self.body_bytes_in = 0
        self.body_bytes_out = 0
        # Request body limit (client_max_body_size, or stricter from a plugin); None: unlimited.
        self.body_limit: int | None = runtime.limits.max_body_bytes or None
        self.body_waiter: asyncio.Future[None] | None = None  # a plugin waits for the whole body
        self.done = False
        self.plugin_ctx: PluginContext | None = None
        self.plugin_chain: Chain = EMPTY_CHAIN

    # =========================================================================================
    # Request side
    # =========================================================================================

    def start(self) -> None:
        """Headers are in: route, then open the upstream leg (or answer ourselves)."""
        if self.pending_error is not None:
            self.respond_error(*self.pending_error, close=True)
            return
        client = self.client
        runtime = self.runtime
        try:
            match = runtime.router.match(
                self.method.decode("latin-1"),
                client.scheme,
                self.host,
                self.path,
                self._router_headers(),
                client.sni,
            )
        except Exception:
            log.exception("router.failed", request_id=self.request_id)
            self.respond_error(500, responses.UNEXPECTED)
            return
        if match is None:
            self.respond_error(404, responses.NO_ROUTE)
            return
        self.match = match
        if match.redirect_status is not None:
            self._redirect(match.redirect_status)
            return
        service_ref = match.route.get("service")
        service = runtime.services.get(service_ref["id"]) if service_ref else None
        if service is None:
            self.respond_error(503, "no Service found with those values")
            return
        self.service = service
        plugins = runtime.plugins
        if not plugins.empty:
            chain = plugins.chain(match.route["id"], service.id, None, client.scheme)
            if chain:
                ctx = PluginContext(PluginRequest(self), match.route, plugins.services.get(service.id))
                self.plugin_ctx, self.plugin_chain = ctx, chain
                if not AccessRun(self, chain, ctx).step():
                    return  # answered by a plugin, or waiting for one (it calls after_access)
        self.after_access()

    def after_access(self) -> None:
        """Plugins are done with the request: pick the upstream's balancer, then send or buffer."""
        runtime = self.runtime
        service = self.service
        match = self.match
        assert service is not None and match is not None
        if service.upstream_name is not None:
            self.balancer = runtime.balancers.get(service.upstream_name)
            if self.balancer is not None and self.balancer.hashes:
                # Once per request: retries keep the key and grow ``tried``.
                self.hash_key = self._hash_key()
                if isinstance(self.hash_key, NewHashCookie):
                    self.hash_cookie = self.balancer.hash_cookie_header(self.hash_key)
        client = self.client
        route = match.route
        limit = self.body_limit
        if limit is not None and self.content_length is not None and self.content_length > limit:
            self.respond_error(self._body_limit_status(), responses.BODY_TOO_LARGE)
            return
        self.buffering_request = bool(route.get("request_buffering")) and not self.upgrade
        self.buffering_response = bool(route.get("response_buffering")) and not self.upgrade
        if self.expect_continue and not self.request_complete:
            # As nginx does for Kong: we answer 100 Continue ourselves once the request is routed.
            client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.buffering_request and not self.request_complete:
            return  # wait for the body (or for it to outgrow the buffer)
        self.open_upstream()

    def _router_headers(self) -> dict[str, str] | None:
        wanted = self.runtime.router.needs_headers
        if not wanted:
            return None
        found: dict[str, str] = {}
        for name, value in self.headers:
            lowered = name.decode("latin-1").lower()
            if lowered in wanted and lowered not in found:
                found[lowered] = value.decode("latin-1")
        return found

    def client_body(self, chunk: bytes) -> None:
        if self.done:
            return
        self.body_bytes_in += len(chunk)
        limit = self.body_limit
        if limit is not None and self.body_bytes_in > limit:
            self.respond_error(self._body_limit_status(), responses.BODY_TOO_LARGE, close=True)
            return
        if self.upstream is not None and self.head_sent_upstream:
            self.upstream.write(self._frame_request_chunk(chunk))
            return
        self.buffered_request.append(chunk)
        if self.buffering_request and self.body_bytes_in > self.runtime.limits.buffer_bytes:
            # Too big to buffer: stream it instead (Kong would spill to disk).
            self.buffering_request = False
            if self.service is not None and not self.connecting and self.upstream is None:
                self.open_upstream()
        if self.upstream is None and self.body_bytes_in > self.runtime.limits.buffer_bytes:
            self.client.pause_reading()  # hold the client until the upstream can take the bytes
            if self.body_waiter is not None:
                self._wake_body_waiter()  # too big to hold whole: the plugin gets None

    def _request_read(self) -> bool:
        """Nothing of the request is left to read, so the connection can serve the next one. A
        request without a body is whole once its head is in; plugins and routing answer from the
        head, before the parser says the (empty) message is complete."""
        return self.request_complete or (not self.chunked_request and not self.content_length)

    def _body_limit_status(self) -> int:
        ctx = self.plugin_ctx
        return ctx.body_limit_status if ctx is not None else 413

    def _wake_body_waiter(self) -> None:
        waiter = self.body_waiter
        self.body_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def client_body_complete(self) -> None:
        self.request_complete = True
        if self.done:
            return
        if self.upstream is not None and self.head_sent_upstream:
            if self.chunked_request and not self.buffering_request:
                self.upstream.write(LAST_CHUNK)
            return
        if (
            self.service is not None
            and self.buffering_request
            and not self.connecting
            and self.upstream is None
        ):
            self.open_upstream()
        elif self.body_waiter is not None:
            self._wake_body_waiter()

    def _frame_request_chunk(self, chunk: bytes) -> bytes:
        if self.chunked_request:
            return b"%x\r\n%b\r\n" % (len(chunk), chunk)
        return chunk

    # -- picking and connecting ---------------------------------------------------------------

    def open_upstream(self) -> None:
        service = self.service
        assert service is not None
        if self.balancer is not None:
            address = self.balancer.select(self.hash_key, self.tried)
            if address is None:
                self.respond_error(503, responses.NO_HEALTHY_TARGET)
                return
            self.target = address
            # Counted now, in the same step as the choice, so least-connections sees it at once.
            self.balancer.on_connect(address)
            host, port = address.host, address.port
        else:
            host, port = service.host, service.port
        key: PoolKey = (host, port, id(service.tls_context) if service.tls_context else 0, service.host)
        pooled = self.client.pool.acquire(key)
        if pooled is not None:
            self._attach(pooled, reused=True)
            return
        self.connecting = True
        self.client.tasks.spawn(self._connect(key, host, port, service))

    def _hash_key(self) -> str | None:
        balancer = self.balancer
        assert balancer is not None
        match = self.match
        return balancer.hash_key(
            consumer_id=None,
            client_ip=self.client.peer_ip,
            headers=self._header_lookup,
            path=self.path,
            query=self.query.decode("latin-1"),
            uri_captures=match.uri_captures if match is not None else {},
        )

    def _header_lookup(self, name: str) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    async def _connect(self, key: PoolKey, host: str, port: int, service: ServicePlan) -> None:
        try:
            connection = await self.client.pool.connect(
                key,
                host,
                port,
                ssl_context=service.tls_context,
                server_hostname=service.host,
                timeout=service.connect_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.connecting = False
            self._connect_failed(exc)
            return
        self.connecting = False
        if self.done:
            connection.close()
            return
        self._attach(connection, reused=False)

    def _connect_failed(self, exc: BaseException) -> None:
        if self.done:
            return
        timed_out = isinstance(exc, TimeoutError)
        self._release_target("timeout" if timed_out else "tcp_failure")
        self.attempts += 1
        service = self.service
        assert service is not None
        if self.attempts <= service.retries and self._replayable():
            self.open_upstream()
            return
        if timed_out:
            self.respond_error(504, responses.UPSTREAM_TIMEOUT)
        else:
            self.respond_error(502, responses.BAD_UPSTREAM_RESPONSE)

    def _replayable(self) -> bool:
        """A retry may resend only what we still hold: nothing of the body has been streamed away."""
        return not self.head_sent_upstream and (self.request_complete or not self.body_bytes_in)

    def _attach(self, connection: UpstreamConnection, *, reused: bool) -> None:
        self.upstream = connection
        connection.exchange = self
        self.head_sent_upstream = True
        body = b"".join(self.buffered_request) if self.buffered_request else b""
        self.buffered_request = []
        whole_body = self.request_complete
        # Kept for a retry on another connection; a streamed body cannot be sent again.
        self.replay_body = body if whole_body else None
        head = self._upstream_head(len(body) if whole_body else None)
        if whole_body:
            connection.write(head + body)
        else:
            connection.write(head + (self._frame_request_chunk(body) if body else b""))
            self.client.resume_reading()
        now = time.monotonic()
        self.upstream_sent_at = now
        self.upstream_last_io = now
        self.client.server.waiting.add(self)  # read_timeout is watched by the server's sweep
        if reused:
            connection.resume_reading()

    def _upstream_head(self, body_length: int | None) -> bytes:
        """Request line and headers for the upstream, with Kong's proxy headers.

        Hot path: client headers pass through with one concatenation each, and the headers that
        depend only on the connection come pre-rendered from it (``client.forwarded_block``).
        """
        service = self.service
        match = self.match
        assert service is not None and match is not None
        client = self.client
        target = match.upstream_path.encode("latin-1")
        if self.query:
            target += b"?" + self.query
        kept: list[bytes] = []
        forwarded_for: bytes | None = None
        # From a trusted peer (Kong's trusted_ips), its X-Forwarded-* values are passed on.
        believed: dict[bytes, bytes] | None = {} if client.trusted else None
        real_ip_header = client.server.real_ip_header
        dropped = self.connection_tokens
        # Only a trusted peer's headers, or names the client's Connection header lists, need
        # looking at when the name's length rules out every header the proxy owns.
        plain = believed is None and dropped is None
        for name, value in self.headers:
            if not plain or (PROXY_OWNED_LENGTHS >> len(name)) & 1:
                lowered = name.lower()
                if lowered in PROXY_OWNED:
                    if lowered == b"x-forwarded-for":
                        forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
                    elif believed is not None and lowered.startswith(b"x-forwarded-"):
                        believed[lowered] = value
                    if believed is not None and lowered == real_ip_header:
                        believed[b"real-ip"] = value.split(b",")[-1].strip()
                    continue
                if believed is not None and lowered == real_ip_header:
                    believed[b"real-ip"] = value.split(b",")[-1].strip()
                if dropped is not None and lowered in dropped:
                    continue  # named in the client's Connection header: hop-by-hop too
            # Parts joined once at the end: concatenating each line would allocate three times.
            kept.append(name)
            kept.append(COLON_SPACE)
            kept.append(value)
            kept.append(CRLF)
        if match.upstream_host is not None:
            host_header = match.upstream_host
        elif self.target is not None:
            host_name = (
                self.balancer.host_header if self.balancer is not None else None
            ) or self.target.hostname
            host_header = host_name if self.target.port in (80, 443) else f"{host_name}:{self.target.port}"
        else:
            host_header = service.host_header
        if believed is None and forwarded_for is None:
            forwarded = client.forwarded_block
            forwarded_host = self.forwarded_host()
            forwarded_path = self.path.encode("latin-1")
        else:
            get = (believed or {}).get
            peer = client.peer_bytes
            forwarded = (
                b"X-Real-IP: %s\r\nX-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Port: %s\r\n"
                % (
                    get(b"real-ip", peer),
                    (forwarded_for + b", " + peer) if forwarded_for else peer,
                    get(b"x-forwarded-proto", client.scheme_bytes),
                    get(b"x-forwarded-port", client.server_port_bytes),
                )
            )
            forwarded_host = get(b"x-forwarded-host", self.forwarded_host())
            forwarded_path = get(b"x-forwarded-path", self.path.encode("latin-1"))
        prefix_line = b""
        if believed and b"x-forwarded-prefix" in believed:
            prefix_line = b"X-Forwarded-Prefix: " + believed[b"x-forwarded-prefix"] + b"\r\n"
        elif match.route["strip_path"]:
            prefix = match.matched_path
            if prefix and prefix != "/":
                prefix_line = b"X-Forwarded-Prefix: " + prefix.encode("latin-1") + b"\r\n"
        if self.upgrade:
            upgrade_value = self._header_lookup("upgrade") or "websocket"
            connection = b"Connection: Upgrade\r\nUpgrade: " + upgrade_value.encode("latin-1") + b"\r\n"
        else:
            connection = b"Connection: keep-alive\r\n"
        if body_length is not None:
            if body_length or self.content_length is not None or self.chunked_request:
                framing = b"Content-Length: %d\r\n" % body_length
            else:
                framing = b""
        elif self.chunked_request:
            framing = b"Transfer-Encoding: chunked\r\n"
        elif self.content_length is not None:
            framing = b"Content-Length: %d\r\n" % self.content_length
        else:
            framing = b""
        return UPSTREAM_HEAD % (
            self.method,
            target,
            b"".join(kept),
            host_header.encode("latin-1"),
            forwarded,
            forwarded_host,
            forwarded_path,
            prefix_line,
            connection,
            framing,
        )

    def forwarded_host(self) -> bytes:
        host = self.host
        if not host:
            return b""
        return (
            host.rpartition(":")[0].encode("latin-1")
            if ":" in host and not host.endswith("]")
            else host.encode("latin-1")
        )

    # =========================================================================================
    # Response side (called by UpstreamConnection)
    # =========================================================================================

    def upstream_headers_complete(self, status: int, keep_alive: bool) -> None:
        if self.done:
            return
        now = time.monotonic()
        self.upstream_last_io = now
        if 100 <= status < 200 and status != 101:
            # We answered 100 Continue ourselves; drop informational responses.
            self.response_headers = []
            return
        self.upstream_first_byte = now
        self.upstream_status = status
        self.upstream_keep_alive = keep_alive
        if self.balancer is not None and self.target is not None:
            self.balancer.report(self.target, status)
        if status == 101 and self.upgrade:
            self._start_tunnel()
            return
        if self.method == b"HEAD":
            # httptools cannot know the request was HEAD and would wait for a body: end here, give
            # the connection a fresh parser, detach it so the old parser's callbacks reach nobody,
            # and release it on the next loop turn, never from inside its own parser callback.
            self._send_response_head(body_length=None, no_body=True)
            upstream = self.upstream
            if upstream is not None:
                upstream.parser = httptools.HttpResponseParser(upstream)
                upstream.exchange = None
            self.client.loop.call_soon(self._head_done, upstream, keep_alive)
            return
        if status in NO_BODY_STATUSES:
            self._send_response_head(body_length=None, no_body=True)
            return  # httptools ends 204 and 304 messages itself
        if self.plugin_ctx is not None:
            self._plugin_response_head(self.plugin_ctx)
        if not self.buffering_response:
            self._send_response_head(body_length=None)

    def _plugin_response_head(self, ctx: PluginContext) -> None:
        """The response phase as soon as the head is in; hold the body if a plugin wants it."""
        run_response(self, ctx, self.plugin_chain, self.upstream_status, self.response_headers)
        if not ctx.body_wanted:
            return
        length = next((v for k, v in self.response_headers if k.lower() == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.runtime.limits.buffer_bytes:
            self._body_too_large(ctx)
            return
        self.buffering_response = True

    def _body_too_large(self, ctx: PluginContext) -> None:
        ctx.body_wanted = False
        log.warning(
            "plugins.body_not_buffered",
            request_id=self.request_id,
            limit=self.runtime.limits.buffer_bytes,
            reason="the response body is larger than the buffer: streamed untouched",
        )

    def _head_done(self, upstream: UpstreamConnection | None, keep_alive: bool) -> None:
        if self.done:
            if upstream is not None:
                upstream.close()
            return
        self.upstream = upstream
        self.upstream_message_complete(keep_alive)

    def upstream_body(self, chunk: bytes) -> None:
        if self.done:
            return
        self.upstream_last_io = time.monotonic()
        self.body_bytes_out += len(chunk)
        if not self.response_head_sent:
            self.buffered_response.append(chunk)
            if self.body_bytes_out > self.runtime.limits.buffer_bytes:
                self.buffering_response = False
                if self.plugin_ctx is not None and self.plugin_ctx.body_wanted:
                    self._body_too_large(self.plugin_ctx)
                self._send_response_head(body_length=None)
            return
        self.client.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if self.rechunk_response else chunk)

    def upstream_message_complete(self, keep_alive: bool) -> None:
        if self.done or self.upstream_done or self.status == 101:
            return  # a 101 "completes" as a message, but the connection now carries the tunnel
        self.upstream_done = True
        if not self.response_head_sent:
            body = b"".join(self.buffered_response)
            self.buffered_response = []
            ctx = self.plugin_ctx
            if ctx is not None and ctx.body_wanted:
                body = run_body(self, ctx, self.plugin_chain, body)
            self._send_response_head(body_length=len(body), body=body)
        elif self.rechunk_response:
            self.client.write(LAST_CHUNK)
        upstream = self.upstream
        self.upstream = None
        self._release_target(None)
        if upstream is not None:
            if keep_alive and self.request_complete and not upstream.closed:
                self.client.pool.release(upstream)
            else:
                upstream.close()
        self.finish()

    def pause_client_reading(self) -> None:
        """The upstream cannot take more request bytes now: stop reading them from the client."""
        self.client.pause_reading()

    def resume_client_reading(self) -> None:
        self.client.resume_reading()

    def upstream_begin(self) -> None:
        """Start of one upstream read: gather what it produces..."""
        self.client.batching = True

    def upstream_flush(self) -> None:
        """...and write it out in one call when the read is done."""
        self.client.flush()

    def _send_response_head(self, body_length: int | None, body: bytes = b"", no_body: bool = False) -> None:
        self.response_head_sent = True
        status = self.upstream_status
        self.status = status
        ctx = self.plugin_ctx
        if ctx is not None:
            run_response(self, ctx, self.plugin_chain, status, self.response_headers)  # once
            status = self.status = ctx.response_status
        options = self.runtime.headers
        keep_alive = self.keep_alive and self.client.accepting
        kept: list[bytes] = []
        upstream_length: bytes | None = None
        upstream_chunked = False
        dropped = self.response_connection_tokens
        for name, value in self.response_headers:
            # A name no owned header is as long as needs no lowering (unless Connection named more).
            if dropped is not None or (RESPONSE_OWNED_LENGTHS >> len(name)) & 1:
                lowered = name.lower()
                if lowered in RESPONSE_OWNED:
                    if lowered == b"content-length":
                        upstream_length = value
                    elif lowered == b"transfer-encoding":
                        upstream_chunked = True
                    continue
                if dropped is not None and lowered in dropped:
                    continue  # named in the upstream's Connection header: hop-by-hop on that side
            kept.append(name)
            kept.append(COLON_SPACE)
            kept.append(value)
            kept.append(CRLF)
        if no_body:
            framing = b"Content-Length: " + upstream_length + b"\r\n" if upstream_length is not None else b""
        elif body_length is not None:
            framing = b"Content-Length: %d\r\n" % body_length
        elif upstream_length is not None and not upstream_chunked:
            framing = b"Content-Length: " + upstream_length + b"\r\n"
        elif self.http_minor >= 1:
            self.rechunk_response = True
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            framing = b""
            keep_alive = False  # an HTTP/1.0 client reads to the end of the connection
        ours = VIA_LINE if options.server_tokens else b""
        if options.latency_tokens:
            ours += LATENCY_LINES % (
                max(int((self.upstream_first_byte - self.upstream_sent_at) * 1000), 0),
                max(int((self.upstream_sent_at - self.started) * 1000), 0),
            )
        if options.request_id:
            ours += b"X-Zonegate-Request-Id: " + self.request_id.encode() + b"\r\n"
        if self.hash_cookie is not None:
            ours += b"Set-Cookie: " + self.hash_cookie.encode("latin-1") + b"\r\n"
        self.keep_alive = keep_alive
        head = responses.status_line(status) + b"".join(kept) + framing + ours
        head += KEEP_ALIVE_END if keep_alive else CLOSE_END
        if body:
            self.client.write(head + body)
            return
        if self.buffered_response:
            chunks = self.buffered_response
            self.buffered_response = []
            if self.rechunk_response:
                chunks = [b"%x\r\n%b\r\n" % (len(chunk), chunk) for chunk in chunks]
            head += b"".join(chunks)
        self.client.write(head)

    # -- WebSocket and other upgrades ------------------------------------------------------------

    def _start_tunnel(self) -> None:
        self.response_head_sent = True
        self.status = 101
        lines = [responses.status_line(101)]
        for name, value in self.response_headers:
            lines += (name, b": ", value, CRLF)
        lines.append(CRLF)
        self.client.write(b"".join(lines))
        self._cancel_timer()
        self.client.start_tunnel(self)

    def upstream_tunnel_data(self, data: bytes) -> None:
        self.body_bytes_out += len(data)
        self.client.write(data)

    def client_tunnel_data(self, data: bytes) -> None:
        self.body_bytes_in += len(data)
        if self.upstream is not None:
            self.upstream.write(data)

    # =========================================================================================
    # Failures and endings
    # =========================================================================================

    def upstream_lost(self, connection: UpstreamConnection) -> None:
        """The upstream closed on us before the response was complete."""
        if self.done:
            return
        if self.upstream is connection:
            self.upstream = None
        if self.status == 101:
            self.client.close()
            self.finish()
            return
        if self.upstream_done:
            return
        if not self.response_head_sent and not self.upstream_status:
            # A pooled connection the upstream had already closed, or a target that died before
            # answering: try again if nothing of the request is lost.
            self._release_target("tcp_failure")
            self.head_sent_upstream = False
            self.attempts += 1
            service = self.service
            # Like nginx (and so Kong), a request that may have had effects is not sent twice.
            replayable = self.method not in NON_IDEMPOTENT and self.replay_body is not None
            if service is not None and self.attempts <= service.retries and replayable:
                self._restore_request_for_retry()
                self.open_upstream()
                return
            self.respond_error(502, responses.BAD_UPSTREAM_RESPONSE)
            return
        if not self.response_head_sent:
            self.respond_error(502, responses.BAD_UPSTREAM_RESPONSE)
            return
        if self.upstream_keep_alive is False and not self.rechunk_response and self._reads_to_close():
            # A close-delimited body: the close is the end.
            self.upstream_message_complete(False)
            return
        self.client.close()
        self.finish()

    def _reads_to_close(self) -> bool:
        return not any(
            name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self.response_headers
        )

    def _restore_request_for_retry(self) -> None:
        # Only requests sent whole are retried after the head left: put their body back.
        self.response_headers = []
        if self.replay_body:
            self.buffered_request = [self.replay_body]

    def upstream_failed(self, reason: str) -> None:
        if self.done:
            return
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.abort()
        if self.response_head_sent:
            self.client.close()
            self.finish()
            return
        self.respond_error(502, responses.BAD_UPSTREAM_RESPONSE)

    def client_lost(self) -> None:
        """The client went away: drop the upstream leg, never pool it."""
        if self.done:
            return
        if not self.response_head_sent:
            self.status = 499
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.abort()
        self.finish(client_gone=True)

    def respond_error(
        self,
        status: int,
        message: str,
        *,
        close: bool = False,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if self.done:
            return
        if self.response_head_sent:
            self.client.close()
            self.finish()
            return
        ctx = self.plugin_ctx
        if ctx is not None and not ctx.response_ran:
            # Kong runs the plugins' header and body filters on its own errors too (CORS on a 502).
            body = responses.error_body(message, self.request_id)
            self.respond_local(status, body, responses.JSON_CONTENT_TYPE, extra_headers or [], close=close)
            return
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.abort()
        self.response_head_sent = True
        self.status = status
        # The rest of an unread request body would be taken for the next request: close instead.
        keep_alive = self.keep_alive and self._request_read() and not close and self.client.accepting
        self.keep_alive = keep_alive
        self.client.write(
            responses.error_response(
                status,
                message,
                self.request_id,
                keep_alive=keep_alive,
                extra_headers=extra_headers,
                head_only=self.method == b"HEAD",
            )
        )
        self.finish()

    def respond_local(
        self,
        status: int,
        body: bytes,
        content_type: str | None,
        extra_headers: list[tuple[bytes, bytes]],
        *,
        close: bool = False,
    ) -> None:
        """An answer of our own (a plugin's exit, or an error on a request with plugins), after
        the plugins' response and body phases: never after a response head."""
        if self.done or self.response_head_sent:
            return
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.abort()
        ctx = self.plugin_ctx
        if ctx is not None:
            status, body, extra_headers = local_response(self, ctx, status, body, content_type, extra_headers)
            content_type = None  # among the headers now
        if self.done or self.response_head_sent:
            return
        self.response_head_sent = True
        self.status = status
        keep_alive = self.keep_alive and self._request_read() and not close and self.client.accepting
        self.keep_alive = keep_alive
        self.client.write(
            responses.raw_response(
                status,
                body,
                content_type,
                self.request_id,
                keep_alive=keep_alive,
                extra_headers=extra_headers,
                head_only=self.method == b"HEAD",
            )
        )
        self.finish()

    def _redirect(self, status: int) -> None:
        if status == 426:
            self.respond_error(426, responses.USE_HTTPS)
            return
        host = self.host or ""
        location = f"https://{host.split(':')[0]}{self.url.decode('latin-1')}"
        self.response_head_sent = True
        self.status = status
        keep_alive = self.keep_alive and self._request_read()
        self.keep_alive = keep_alive
        self.client.write(
            responses.error_response(
                status,
                responses.reason(status).decode(),
                self.request_id,
                keep_alive=keep_alive,
                extra_headers=[(b"Location", location.encode("latin-1"))],
            )
        )
        self.finish()

    # -- timers ------------------------------------------------------------------------------------

    def _cancel_timer(self) -> None:
        self.client.server.waiting.discard(self)

    def check_timeout(self, now: float) -> None:
        """read_timeout, checked by the server's sweep: no timer object per request on the hot path."""
        if self.done or self.service is None or now - self.upstream_last_io < self.service.read_timeout:
            return
        self._cancel_timer()
        self._release_target("timeout")
        if self.response_head_sent:
            self.upstream_failed("read timeout")
        else:
            self.respond_error(504, responses.UPSTREAM_TIMEOUT)

    def _release_target(self, failure: str | None) -> None:
        """Give the chosen target back to the balancer once, reporting a failure if there was one."""
        balancer, target = self.balancer, self.target
        if balancer is None or target is None:
            return
        self.target = None
        balancer.on_release(
            target, time.monotonic() - self.upstream_sent_at if self.upstream_sent_at else None
        )
        if failure is not None:
            balancer.report(target, failure)  # type: ignore[arg-type]
            self.tried = self.tried | {target}
        self.last_target = target

    def finish(self, *, client_gone: bool = False) -> None:
        if self.done:
            return
        self.done = True
        self._cancel_timer()
        self._release_target(None)
        if self.plugin_ctx is not None:
            if self.body_waiter is not None:
                self._wake_body_waiter()
            run_log(self, self.plugin_ctx, self.plugin_chain)
        self.client.exchange_finished(self, client_gone=client_gone)
        # The plugin context's request view points back here: dropping the cycle lets reference
        # counting free both now, not the cyclic GC later (which took ~14% of a key-auth +
        # rate-limiting request). Nothing reads the context after the log phase.
        self.plugin_ctx = None
