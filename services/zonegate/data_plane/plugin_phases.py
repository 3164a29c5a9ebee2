"""Running plugin phases for one exchange: access (maybe async, maybe short-circuit), response, log.

Requests whose chain is empty never get here: the exchange checks ``PluginSet.empty`` and the
chain lookup first, so a config without plugins costs one attribute read per request.

Access runs the chain in priority order. When a plugin authenticates a consumer and the config
has consumer-scoped instances, the chain is looked up again for that consumer and the rest of it
(lower priorities, names not run yet) continues from the new chain, as Kong's plugins iterator
does. A phase that returns an awaitable pauses only its request: the rest runs when it is done.
A plugin that raises answers 500 with the request id and is logged; the worker goes on.

The response phase runs once per request, on whatever answers the client: the upstream's
response, a plugin's ``Exit`` or the proxy's own error (Kong runs ``header_filter`` and
``body_filter`` on all three). The ``body`` phase runs on a whole body, when a response phase
asked for it; the exchange buffers it up to its limit, and past it streams untouched.

A plugin may wait for the whole request body in its access phase (``ctx.wait_body()``): the
client is read on while the access phase waits, up to the buffer limit.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import structlog

from zonegate.data_plane import log_serializer, responses
from zonegate.data_plane.real_ip import real_client_ip
from zonegate.plugins.api import ExchangeMeasures, ExchangeSummary, Exit, Plugin, PluginContext
from zonegate.plugins.chains import Chain

if TYPE_CHECKING:
    import asyncio

    from zonegate.data_plane.exchange import Exchange

log = structlog.get_logger(__name__)

_PATH_SAFE: Final = "/%:@!$&'()*+,;=-._~"  # RFC 3986 path characters, escapes kept as they are
_UNSAFE_IN_HEADER: Final = str.maketrans({"\r": "%0D", "\n": "%0A", "\0": "%00"})


class PluginRequest:
    """The exchange's request as plugins see it (``plugins.api.RequestView``)."""

    __slots__ = ("exchange",)

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    @property
    def method(self) -> str:
        return self.exchange.method.decode("latin-1")

    @property
    def path(self) -> str:
        return self.exchange.path

    @property
    def scheme(self) -> str:
        return self.exchange.client.scheme

    @property
    def client_ip(self) -> str:
        """Kong's ``kong.client.get_ip``: the peer, or from a trusted peer its real-IP header."""
        client = self.exchange.client
        if not client.trusted:
            return client.peer_ip
        server = client.server
        wanted = server.real_ip_header
        values = [v.decode("latin-1") for k, v in self.exchange.headers if k.lower() == wanted]
        return real_client_ip(client.peer_ip, ", ".join(values), server.is_trusted, server.real_ip_recursive)

    @property
    def request_id(self) -> str:
        return self.exchange.request_id

    @property
    def query_bytes(self) -> bytes:
        return self.exchange.query

    @query_bytes.setter
    def query_bytes(self, value: bytes) -> None:
        self.exchange.query = value

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return self.exchange.headers

    @property
    def uri_captures(self) -> Mapping[str, str]:
        match = self.exchange.match
        return match.uri_captures if match is not None else {}

    @property
    def uri_groups(self) -> tuple[str, ...]:
        match = self.exchange.match
        return match.uri_groups if match is not None else ()

    def set_method(self, method: str) -> None:
        self.exchange.method = method.encode("latin-1")

    def set_upstream_path(self, path: str) -> None:
        match = self.exchange.match
        if match is not None:  # routing results are immutable: the request gets its own copy
            # Escaped as Kong's set_path does: whatever a plugin renders stays one request line.
            path = quote(path, safe=_PATH_SAFE)
            self.exchange.match = dataclasses.replace(match, upstream_path=path)

    def set_upstream_host(self, host: str) -> None:
        match = self.exchange.match
        if match is not None:
            host = host.translate(_UNSAFE_IN_HEADER).encode("latin-1", "replace").decode("latin-1")
            self.exchange.match = dataclasses.replace(match, upstream_host=host)

    @property
    def body_bytes(self) -> int:
        return self.exchange.body_bytes_in

    @property
    def body_ready(self) -> bool:
        exchange = self.exchange
        return (
            exchange.request_complete
            or exchange.head_sent_upstream
            or exchange.body_bytes_in > exchange.runtime.limits.buffer_bytes
        )

    def body(self) -> bytes | None:
        exchange = self.exchange
        if (
            not exchange.request_complete
            or exchange.head_sent_upstream
            or exchange.body_bytes_in > exchange.runtime.limits.buffer_bytes
        ):
            return None
        return b"".join(exchange.buffered_request)

    async def wait_body(self) -> bytes | None:
        exchange = self.exchange
        if not self.body_ready and not exchange.done:
            if exchange.expect_continue:
                # As nginx does when Kong reads the body: the client waits for this before sending.
                exchange.expect_continue = False
                exchange.client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            waiter: asyncio.Future[None] = exchange.client.loop.create_future()
            exchange.body_waiter = waiter
            exchange.resume_client_reading()
            try:
                await waiter
            finally:
                exchange.body_waiter = None
        return self.body()

    def set_body(self, body: bytes) -> None:
        exchange = self.exchange
        if not exchange.request_complete or exchange.head_sent_upstream:
            raise RuntimeError("the request body is not held whole")
        # _attach sends what is buffered with its own Content-Length: the new body is framed right.
        exchange.buffered_request = [body] if body else []

    def serialize(self) -> dict[str, Any]:
        ctx = self.exchange.plugin_ctx
        assert ctx is not None
        return log_serializer.serialize(self.exchange, ctx)

    def measures(self) -> ExchangeMeasures:
        ctx = self.exchange.plugin_ctx
        assert ctx is not None
        return log_serializer.measures(self.exchange, ctx)

    def summary(self) -> ExchangeSummary:
        exchange = self.exchange
        target = exchange.last_target or exchange.target
        service = exchange.service
        address: tuple[str, int] | None = None
        if target is not None:
            address = (target.host, target.port)
        elif service is not None and (exchange.upstream_sent_at or exchange.attempts):
            address = (service.host, service.port)
        # ``attempts`` counts the failed tries; the last one counts too unless it is among them.
        tries = 0
        if address is not None:
            tries = exchange.attempts + (1 if exchange.upstream_status or not exchange.attempts else 0)
        ctx = exchange.plugin_ctx
        return ExchangeSummary(
            http_version="1.0" if exchange.http_minor == 0 else "1.1",
            host=exchange.host or "",
            target=exchange.url.decode("latin-1"),
            status=exchange.status or (ctx.response_status if ctx is not None else 0),
            started=exchange.started,
            upstream_status=exchange.upstream_status,
            upstream_address=address,
            tries=tries,
        )

    def limit_body(self, max_bytes: int) -> bool:
        exchange = self.exchange
        current = exchange.body_limit
        if current is not None and current <= max_bytes:
            return False
        exchange.body_limit = max_bytes
        return True


class AccessRun:
    """The access phase of one request, resumable after an awaited plugin."""

    __slots__ = ("chain", "ctx", "exchange", "index", "ran")

    def __init__(self, exchange: Exchange, chain: Chain, ctx: PluginContext) -> None:
        self.exchange = exchange
        self.chain = chain
        self.ctx = ctx
        self.index = 0
        # Names run in earlier chains, before a switch to a consumer's chain; those of the current
        # chain are ``chain[:index]`` (collected only when a switch happens: it is rare).
        self.ran: frozenset[str] = frozenset()

    def step(self) -> bool:
        """Run plugins until the end (True: proxy on), an exit or a wait (False: not now)."""
        ctx = self.ctx
        while self.index < len(self.chain):
            plugin = self.chain[self.index]
            self.index += 1
            access = plugin.access_phase
            if access is None:
                continue
            consumer_before = ctx.consumer
            try:
                result = access(ctx)
            except Exception:
                fail(self.exchange, plugin, "access")
                return False
            if result is None:  # the common case: go on
                if ctx.consumer is not consumer_before:
                    self._switch_to_consumer(plugin)
                continue
            if inspect.isawaitable(result):
                self.exchange.pause_client_reading()
                self.exchange.client.tasks.spawn(self._wait(plugin, result, consumer_before))
                return False
            if not self._after(plugin, result, consumer_before):
                return False
        return True

    def _after(self, plugin: Plugin, result: Exit | None, consumer_before: Any) -> bool:
        if isinstance(result, Exit):
            respond_exit(self.exchange, result)
            return False
        if self.ctx.consumer is not consumer_before:
            self._switch_to_consumer(plugin)
        return True

    def _switch_to_consumer(self, current: Plugin) -> None:
        exchange = self.exchange
        plugins = exchange.runtime.plugins
        consumer = self.ctx.consumer
        if not plugins.consumer_scoped or consumer is None:
            return
        route = self.ctx.route
        service = self.ctx.service
        chain = plugins.chain(
            route.get("id"),
            service.get("id") if service else None,
            consumer.get("id"),
            exchange.client.scheme,
        )
        ran = self.ran | {p.NAME for p in self.chain[: self.index]}
        order = (-current.PRIORITY, current.NAME)
        rest = tuple(p for p in chain if order < (-p.PRIORITY, p.NAME) and p.NAME not in ran)
        self.chain, self.index, self.ran = rest, 0, ran
        exchange.plugin_chain = chain  # the response and log phases run the consumer's chain

    async def _wait(self, plugin: Plugin, pending: Awaitable[Exit | None], consumer_before: Any) -> None:
        exchange = self.exchange
        try:
            result = await pending
        except Exception:
            fail(exchange, plugin, "access")
            return
        if exchange.done:
            return
        exchange.resume_client_reading()
        if self._after(plugin, result, consumer_before) and self.step():
            exchange.after_access()


def fail(exchange: Exchange, plugin: Plugin, phase: str) -> None:
    log.exception("plugin.failed", plugin=plugin.NAME, phase=phase, request_id=exchange.request_id)
    exchange.respond_error(500, responses.UNEXPECTED)


def respond_exit(exchange: Exchange, result: Exit) -> None:
    """Write a plugin's own response, then finish. Its headers replace those plugins set so far
    (Kong's ``kong.response.exit``), and the response phases run on it."""
    if exchange.done:
        return
    content_type: str | None
    if result.message is not None:
        body = responses.error_body(result.message, exchange.request_id)
        content_type = responses.JSON_CONTENT_TYPE
    elif result.json is not None:
        body = json.dumps(result.json, separators=(",", ":")).encode()
        content_type = result.content_type or responses.JSON_CONTENT_TYPE
    else:
        body = result.body or b""
        content_type = result.content_type
    headers = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, values in result.headers.items()
        for v in ((values,) if isinstance(values, str) else values)
    ]
    exchange.respond_local(result.status, body, content_type, headers)


def local_response(
    exchange: Exchange,
    ctx: PluginContext,
    status: int,
    body: bytes,
    content_type: str | None,
    headers: list[tuple[bytes, bytes]],
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The response and body phases over a response the proxy writes itself (a plugin's exit
    or a proxy error): the final status, body and headers (Content-Type among them)."""
    final: list[tuple[bytes, bytes]] = []
    ctx.attach_response(final)
    if content_type:  # this answer's type wins over one a plugin set earlier: one header, not two
        ctx.set_response_header("Content-Type", content_type)
    named: set[bytes] = set()
    for name, value in headers:
        lowered = name.lower()
        if lowered in named:  # a header with several values: the later ones are added
            ctx.add_response_header(name.decode("latin-1"), value.decode("latin-1"))
        else:
            named.add(lowered)
            ctx.set_response_header(name.decode("latin-1"), value.decode("latin-1"))
    run_response(exchange, ctx, exchange.plugin_chain, status, final)
    if ctx.body_wanted and exchange.method != b"HEAD":
        body = run_body(exchange, ctx, exchange.plugin_chain, body)
    return ctx.response_status, body, final


def run_response(
    exchange: Exchange, ctx: PluginContext, chain: Chain, status: int, headers: list[tuple[bytes, bytes]]
) -> None:
    """The response phase, once per request, over ``headers`` (edited in place)."""
    if ctx.response_ran:
        return
    ctx.response_ran = True
    ctx.response_status = status
    ctx.attach_response(headers)
    for plugin in chain:
        response = plugin.response_phase
        if response is None:
            continue
        try:
            response(ctx)
        except Exception:
            log.exception(
                "plugin.failed", plugin=plugin.NAME, phase="response", request_id=exchange.request_id
            )


def run_body(exchange: Exchange, ctx: PluginContext, chain: Chain, body: bytes) -> bytes:
    """The body phase: each plugin that has one gets the whole body and returns the new one."""
    for plugin in chain:
        body_phase = plugin.body_phase
        if body_phase is None:
            continue
        try:
            body = body_phase(ctx, body)
        except Exception:
            log.exception("plugin.failed", plugin=plugin.NAME, phase="body", request_id=exchange.request_id)
    return body


def run_log(exchange: Exchange, ctx: PluginContext, chain: Chain) -> None:
    for plugin in chain:
        log_phase = plugin.log_phase
        if log_phase is None:
            continue
        try:
            log_phase(ctx)
        except Exception:
            log.exception("plugin.failed", plugin=plugin.NAME, phase="log", request_id=exchange.request_id)
