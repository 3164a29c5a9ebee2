"""Running plugin phases for one exchange: access (maybe async, maybe short-circuit), response, log.

Requests whose chain is empty never get here: the exchange checks ``PluginSet.empty`` and the
chain lookup first, so a config without plugins costs one attribute read per request.

Access runs the chain in priority order. When a plugin authenticates a consumer and the config
has consumer-scoped instances, the chain is looked up again for that consumer and the rest of it
(lower priorities, names not run yet) continues from the new chain, as Kong's plugins iterator
does. A phase that returns an awaitable pauses only its request: the rest runs when it is done.
A plugin that raises answers 500 with the request id and is logged; the worker goes on.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import structlog

from zonegate.data_plane import responses
from zonegate.plugins.api import Exit, Plugin, PluginContext
from zonegate.plugins.chains import Chain

if TYPE_CHECKING:
    from zonegate.data_plane.exchange import Exchange

log = structlog.get_logger(__name__)


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
        return self.exchange.client.peer_bytes.decode("latin-1")

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


class AccessRun:
    """The access phase of one request, resumable after an awaited plugin."""

    __slots__ = ("chain", "ctx", "exchange", "index", "ran")

    def __init__(self, exchange: Exchange, chain: Chain, ctx: PluginContext) -> None:
        self.exchange = exchange
        self.chain = chain
        self.ctx = ctx
        self.index = 0
        self.ran: set[str] = set()

    def step(self) -> bool:
        """Run plugins until the end (True: proxy on), an exit or a wait (False: not now)."""
        while self.index < len(self.chain):
            plugin = self.chain[self.index]
            self.index += 1
            access = getattr(plugin, "access", None)
            self.ran.add(plugin.NAME)
            if access is None:
                continue
            consumer_before = self.ctx.consumer
            try:
                result = access(self.ctx)
            except Exception:
                fail(self.exchange, plugin, "access")
                return False
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
        order = (-current.PRIORITY, current.NAME)
        rest = tuple(p for p in chain if order < (-p.PRIORITY, p.NAME) and p.NAME not in self.ran)
        self.chain, self.index = rest, 0
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
    """Write a plugin's own response (and the headers plugins set so far), then finish."""
    if exchange.done:
        return
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in result.headers.items()]
    ctx = exchange.plugin_ctx
    if ctx is not None:
        extra += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in ctx.response_headers]
    if result.message is not None:
        exchange.respond_error(result.status, result.message, extra_headers=extra)
        return
    content_type: str | None
    if result.json is not None:
        body = json.dumps(result.json, separators=(",", ":")).encode()
        content_type = result.content_type or "application/json; charset=utf-8"
    else:
        body = result.body or b""
        content_type = result.content_type
    exchange.respond_raw(result.status, body, content_type, extra)


def run_response(exchange: Exchange, ctx: PluginContext, chain: Chain, status: int) -> None:
    ctx.response_status = status
    for plugin in chain:
        response = getattr(plugin, "response", None)
        if response is None:
            continue
        try:
            response(ctx)
        except Exception:
            log.exception(
                "plugin.failed", plugin=plugin.NAME, phase="response", request_id=exchange.request_id
            )


def run_log(exchange: Exchange, ctx: PluginContext, chain: Chain) -> None:
    for plugin in chain:
        log_phase = getattr(plugin, "log", None)
        if log_phase is None:
            continue
        try:
            log_phase(ctx)
        except Exception:
            log.exception("plugin.failed", plugin=plugin.NAME, phase="log", request_id=exchange.request_id)
