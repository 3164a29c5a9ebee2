"""opentelemetry's handler: continue or start a trace, tell the upstream, export two spans.

``access`` reads the caller's context (``propagation.extract``), picks the ids of the root span
(``kong``) and of the span that calls the upstream (``kong.balancer``), decides sampling, and
writes the context upstream with the balancer span as the parent, as Kong does. ``response``
adds ``http_response_header_for_traceid``. ``log`` turns the request into at most two span
tuples and puts them on the instance's queue; a background task encodes each batch as OTLP
protobuf and POSTs it to ``traces_endpoint`` (``http_log.batch_queue``: batching, retries with
backoff, a bounded queue that drops its oldest span with a log line when full). A request never
waits for the collector. Unsampled requests still propagate (flag 00) and export nothing. When
the process stops, ``close_worker`` sends what is still queued.

A request stopped before this plugin's access phase ran (an auth plugin's 401) still gets a root
span, on a new trace sampled by ``sampling_rate``, as Kong's request instrumentation gives it one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import structlog

from zonegate import __version__
from zonegate.node_identity import load_node_id
from zonegate.plugins.api import AccessResult, Plugin, PluginContext, SharedIndexes
from zonegate.plugins.http_log.batch_queue import BatchQueue, Outbound
from zonegate.plugins.opentelemetry import otlp
from zonegate.plugins.opentelemetry.propagation import (
    WRITTEN_HEADERS,
    Extracted,
    Outgoing,
    extract,
    headers_for,
    inject_formats,
    plan_from_config,
    tracing_headers,
)
from zonegate.plugins.opentelemetry.spans import (
    KIND_CLIENT,
    KIND_SERVER,
    STATUS_ERROR,
    AttributeValue,
    Span,
    new_span_id,
    new_trace_id,
    should_sample,
)
from zonegate.settings import Settings

log = structlog.get_logger(__name__)

USER_AGENT: Final = f"zonegate-opentelemetry/{__version__}"
FLUSH_SECONDS: Final = 2.0  # what a stopping process gives its queues
_STATE: Final = "opentelemetry.trace"  # this plugin's key in ctx.shared (Kong's kong.ctx.plugin)

_OUTBOUND: Final = Outbound(USER_AGENT)
_node_id: str | None = None


class _Trace:
    """One request's trace: the ids and the sampling decision, set once in access."""

    __slots__ = ("balancer_id", "balancer_start", "parent_id", "root_id", "sampled", "trace_id")

    def __init__(self, trace_id: int, parent_id: int, sampled: bool) -> None:
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.sampled = sampled
        self.root_id = new_span_id()
        self.balancer_id = new_span_id()
        self.balancer_start = 0.0  # time.monotonic() when access ended: the upstream is picked next


def queue_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """``queue`` with Kong's mapping of the deprecated ``batch_span_count`` and
    ``batch_flush_delay`` (used when set to other than their old defaults and the queue field
    still has its own default)."""
    settings = dict(config["queue"])
    count, delay = config.get("batch_span_count"), config.get("batch_flush_delay")
    if count is not None and count != 200 and settings["max_batch_size"] == 200:
        settings["max_batch_size"] = count
    if delay is not None and delay != 3 and settings["max_coalescing_delay"] == 1:
        settings["max_coalescing_delay"] = delay
    return settings


def _host_without_port(host: str) -> str:
    """nginx's ``$host``: the name alone, lower-cased (IPv6 keeps its brackets)."""
    if host.startswith("["):
        return host[: host.find("]") + 1].lower() if "]" in host else host.lower()
    return host.partition(":")[0].lower()


class OpenTelemetry(Plugin):
    NAME = "opentelemetry"
    PRIORITY = 14
    VERSION = __version__

    @classmethod
    def init_worker(cls, settings: Settings) -> None:
        global _node_id
        _node_id = load_node_id(settings.prefix)

    @classmethod
    async def close_worker(cls) -> None:
        """The process stops: send what the queues hold (for at most ``FLUSH_SECONDS``), then
        close the client."""
        await _OUTBOUND.close(FLUSH_SECONDS)

    def configure(self, shared: SharedIndexes) -> None:
        config = self.config
        self.endpoint: str = config["traces_endpoint"]
        headers = dict(config.get("headers") or {})
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = otlp.CONTENT_TYPE
        self.headers = headers
        connect, send, read = (config[k] / 1000 for k in ("connect_timeout", "send_timeout", "read_timeout"))
        self.timeout = aiohttp.ClientTimeout(total=connect + send + read, connect=connect, sock_read=read)
        rate = config.get("sampling_rate")
        self.rate: float = 1.0 if rate is None else float(rate)
        self.plan = plan_from_config(config)
        self.trace_header: str | None = config.get("http_response_header_for_traceid")
        self.settings = queue_settings(config)
        self.key = (self.id, json.dumps(config, sort_keys=True, default=str))
        self.resource: tuple[tuple[str, AttributeValue], ...] | None = None  # node id comes later
        # Built on first use, kept for this config: what is the same for every request of a
        # route (its attributes), or of a set of formats (the headers to replace).
        self._dropped_by_formats: dict[tuple[str, ...], frozenset[bytes]] = {}
        self._route_attributes: dict[tuple[Any, Any], tuple[tuple[str, AttributeValue], ...]] = {}

    # -- the request ------------------------------------------------------------------------------

    def access(self, ctx: PluginContext) -> AccessResult:
        plan = self.plan
        found: Extracted | None = None
        if plan.extract:
            found = extract(tracing_headers(ctx.request.headers), plan.extract)
        if found is not None and found.trace_id is not None:
            trace = _Trace(found.trace_id, found.span_id or found.parent_id or 0, False)
        else:
            trace = _Trace(new_trace_id(), 0, False)
        trace.sampled = should_sample(found.sampled if found is not None else None, trace.trace_id, self.rate)
        ctx.shared[_STATE] = trace
        formats = inject_formats(plan, found)
        if formats or plan.clear:
            outgoing = Outgoing(
                trace.trace_id,
                trace.balancer_id,
                trace.root_id,
                trace.sampled,
                debug=found is not None and found.debug,
                trace_id_bytes=found.trace_id_bytes if found is not None and found.trace_id else 16,
            )
            # One pass over the request headers, as ``ctx.replace_headers`` makes, without its
            # escaping: names come from the schema and values are hex.
            headers = ctx.request.headers
            dropped = self._dropped(formats)
            headers[:] = [(k, v) for k, v in headers if k.lower() not in dropped]
            for fmt in formats:
                headers += [(k.encode(), v.encode()) for k, v in headers_for(fmt, outgoing)]
        trace.balancer_start = time.monotonic()
        return None

    def _dropped(self, formats: tuple[str, ...]) -> frozenset[bytes]:
        """Lower-cased names to remove before writing ``formats``: ``clear`` and their own."""
        dropped = self._dropped_by_formats.get(formats)
        if dropped is None:
            names = [*self.plan.clear, *(name for fmt in formats for name in WRITTEN_HEADERS[fmt])]
            dropped = self._dropped_by_formats[formats] = frozenset(n.lower().encode() for n in names)
        return dropped

    def _trace(self, ctx: PluginContext) -> _Trace:
        trace = ctx.shared.get(_STATE)
        if trace is None:  # stopped before our access phase: a trace of its own
            trace = _Trace(new_trace_id(), 0, False)
            trace.sampled = should_sample(None, trace.trace_id, self.rate)
            ctx.shared[_STATE] = trace
        return trace

    def response(self, ctx: PluginContext) -> None:
        if self.trace_header is not None:
            ctx.add_response_header(self.trace_header, f"{self._trace(ctx).trace_id:032x}")

    def log(self, ctx: PluginContext) -> None:
        trace = self._trace(ctx)
        if not trace.sampled:
            return
        queue = self._queue()
        for span in self._spans(ctx, trace):
            queue.put(span)

    def _spans(self, ctx: PluginContext, trace: _Trace) -> list[Span]:
        summary = ctx.request.summary()
        now_ns = time.time_ns()
        now = time.monotonic()
        scheme = ctx.request.scheme
        host = _host_without_port(summary.host)
        method = ctx.method
        service = ctx.service
        root: list[tuple[str, AttributeValue]] = [
            ("http.method", method),
            ("http.url", f"{scheme}://{host}{summary.target}"),
            ("http.host", host),
            ("http.scheme", scheme),
            ("http.flavor", summary.http_version),
            ("http.client_ip", ctx.client_ip),
            ("net.peer.ip", ctx.client_ip),
            ("kong.request.id", ctx.request.request_id),
            ("http.status_code", summary.status),
        ]
        spans = [
            Span(
                trace.trace_id,
                trace.root_id,
                trace.parent_id,
                "kong",
                KIND_SERVER,
                now_ns - int((now - summary.started) * 1e9),
                now_ns,
                (*root, *self._route_attributes_of(ctx.route, service)),
            )
        ]
        address = summary.upstream_address
        if address is not None and trace.balancer_start:
            peer_name = str(service.get("host") or "") if service is not None else ""
            upstream_scheme = str(service.get("protocol") or scheme) if service is not None else scheme
            balancer: list[tuple[str, AttributeValue]] = [
                ("try_count", summary.tries),
                ("net.peer.ip", address[0]),
                ("net.peer.port", address[1]),
                ("net.peer.name", peer_name),
                ("http.method", method),
                ("http.url", f"{upstream_scheme}://{peer_name}{summary.target}"),
            ]
            status = 0
            if not summary.upstream_status:  # no try got an answer: Kong marks the try failed
                balancer.append(("http.status_code", summary.status))
                status = STATUS_ERROR
            spans.append(
                Span(
                    trace.trace_id,
                    trace.balancer_id,
                    trace.root_id,
                    "kong.balancer",
                    KIND_CLIENT,
                    now_ns - int((now - trace.balancer_start) * 1e9),
                    now_ns,
                    tuple(balancer),
                    status,
                )
            )
        return spans

    def _route_attributes_of(
        self, route: Mapping[str, Any], service: Mapping[str, Any] | None
    ) -> tuple[tuple[str, AttributeValue], ...]:
        key = (route.get("id"), service.get("id") if service is not None else None)
        found = self._route_attributes.get(key)
        if found is None:
            paths = route.get("paths")
            attributes: list[tuple[str, AttributeValue]] = [
                ("http.route", paths[0] if paths else ""),
                ("kong.route.id", route.get("id") or ""),
            ]
            if route.get("name"):
                attributes.append(("kong.route.name", route["name"]))
            if service is not None:
                attributes.append(("kong.service.id", service.get("id") or ""))
                if service.get("name"):
                    attributes.append(("kong.service.name", service["name"]))
            found = self._route_attributes[key] = tuple(attributes)
        return found

    # -- the exporter ---------------------------------------------------------------------------

    def _queue(self) -> BatchQueue:
        return _OUTBOUND.queue(self.key, f"opentelemetry:{self.id}", self.settings, self._send)

    async def _send(self, batch: list[Any]) -> None:
        resource = self.resource
        if resource is None:
            resource = self.resource = otlp.resource_attributes(
                __version__, _node_id, self.config.get("resource_attributes")
            )
        body = otlp.encode_traces(batch, resource)
        async with _OUTBOUND.client().post(
            self.endpoint, data=body, headers=self.headers, timeout=self.timeout
        ) as response:
            await response.read()
            if not 200 <= response.status < 300:
                raise RuntimeError(f"{self.endpoint} answered {response.status}")
        log.debug("opentelemetry.exported", spans=len(batch), endpoint=self.endpoint)
