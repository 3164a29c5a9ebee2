"""opentelemetry: trace context parsing and writing, sampling, OTLP encoding, and the plugin
end to end: a real node, a real echo upstream and a real OTLP/HTTP collector started here."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from data_plane.test_proxy_e2e import echo, request, service
from harness.echo_upstream import EchoUpstream
from harness.zonegate_node import ZonegateNode
from zonegate.core import declarative
from zonegate.core.errors import DeclarativeConfigError
from zonegate.embedded.ports import free_port
from zonegate.plugins.opentelemetry import otlp
from zonegate.plugins.opentelemetry.handler import queue_settings
from zonegate.plugins.opentelemetry.propagation import (
    Extracted,
    Outgoing,
    extract,
    format_traceparent,
    headers_for,
    inject_formats,
    parse_b3_single,
    parse_traceparent,
    plan_from_config,
    tracing_headers,
)
from zonegate.plugins.opentelemetry.spans import Span, sampled_by_rate, should_sample

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"

# -- the collector ---------------------------------------------------------------------------------


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start: int
    end: int
    attributes: dict[str, Any]
    status: int
    resource: dict[str, Any]
    scope: tuple[str, str]


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


class Collector(http.server.ThreadingHTTPServer):
    """A real OTLP/HTTP traces endpoint: decodes each protobuf body. ``mode`` "fail" answers
    500 after a pause (a sick collector); "ok" stores the spans."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _CollectorHandler)
        self.mode = "ok"
        self.spans: list[ReceivedSpan] = []
        self.exports: list[dict[str, str]] = []  # the headers of each stored export
        self.failures = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in list(self.spans) if span.trace_id == trace_id]

    def store(self, body: bytes) -> None:
        message = ExportTraceServiceRequest.FromString(body)
        for resource_spans in message.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                scope = (scope_spans.scope.name, scope_spans.scope.version)
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            start=span.start_time_unix_nano,
                            end=span.end_time_unix_nano,
                            attributes={kv.key: _value(kv.value) for kv in span.attributes},
                            status=span.status.code,
                            resource=resource,
                            scope=scope,
                        )
                    )


class _CollectorHandler(http.server.BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.mode == "fail":
            self.server.failures += 1
            time.sleep(1.0)
            self.send_response(500)
        elif self.path != "/v1/traces":
            self.send_response(404)
        else:
            self.server.exports.append({k.lower(): v for k, v in self.headers.items()})
            self.server.store(body)
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Collectors:
    def __init__(self) -> None:
        self.started: list[Collector] = []

    def __call__(self, port: int = 0) -> Collector:
        server = Collector(port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.started.append(server)
        return server


@pytest.fixture
def collectors() -> Iterator[Collectors]:
    factory = Collectors()
    yield factory
    for server in factory.started:
        server.shutdown()
        server.server_close()


def wait_for(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def otel(endpoint: str, **config: Any) -> dict[str, Any]:
    queue = {"max_coalescing_delay": 0.05, **config.pop("queue", {})}
    return {"name": "opentelemetry", "config": {"traces_endpoint": endpoint, "queue": queue, **config}}


def route(name: str, *plugins: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "paths": [f"/{name}"], "plugins": list(plugins)}


def start(factory: Any, upstream: EchoUpstream, *routes: dict[str, Any]) -> ZonegateNode:
    node: ZonegateNode = factory(
        {"_format_version": "3.0", "services": [{**service("svc", upstream), "routes": list(routes)}]}
    )
    return node


def upstream_saw(body: bytes) -> dict[str, str]:
    return dict(echo(body)["headers_lower"])


# -- trace context: pure ---------------------------------------------------------------------------


def test_traceparent_is_parsed_as_kong_reads_it() -> None:
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-01") == (int(TRACE, 16), int(SPAN, 16), True)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00") == (int(TRACE, 16), int(SPAN, 16), False)
    assert parse_traceparent(f"00-{TRACE.upper()}-{SPAN}-03") == (int(TRACE, 16), int(SPAN, 16), True)
    for bad in (
        f"01-{TRACE}-{SPAN}-01",  # only version 00
        f"ff-{TRACE}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero ids are invalid
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE[:-1]}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}1-01",
        f"00-{TRACE}-{SPAN}-1",
        f"00-{TRACE}-{SPAN}-01-extra",
        f"00-{TRACE[:-1]}g-{SPAN}-01",
        "",
        "garbage",
    ):
        assert parse_traceparent(bad) is None, bad


@given(st.integers(1, (1 << 128) - 1), st.integers(1, (1 << 64) - 1), st.booleans())
def test_traceparent_round_trips(trace_id: int, span_id: int, sampled: bool) -> None:
    text = format_traceparent(trace_id, span_id, sampled)
    assert len(text) == 55 and text == text.lower()
    assert parse_traceparent(text) == (trace_id, span_id, sampled)


def test_b3_single_and_multi_headers() -> None:
    parent = "05e3ac9a4f6e3b90"
    found = parse_b3_single(f"{TRACE}-{SPAN}-1-{parent}")
    assert found == Extracted("b3", int(TRACE, 16), int(SPAN, 16), int(parent, 16), True, single_header=True)
    short = parse_b3_single(f"{TRACE[16:]}-{SPAN}")
    assert short is not None and short.trace_id == int(TRACE[16:], 16) and short.trace_id_bytes == 8
    assert short.sampled is None
    debug = parse_b3_single(f"{TRACE}-{SPAN}-d")
    assert debug is not None and debug.sampled is True and debug.debug
    assert parse_b3_single("0") == Extracted("b3", sampled=False, single_header=True)
    for bad in (f"{TRACE}", f"{TRACE}-{SPAN}-x", f"{TRACE}-{SPAN}-1-bad", f"{TRACE[:-2]}-{SPAN}", "2"):
        assert parse_b3_single(bad) is None, bad

    def read(**headers: str) -> Extracted | None:
        raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
        return extract(tracing_headers(raw), ("b3", "w3c"))

    multi = read(**{"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-Sampled": "1"})
    assert multi == Extracted("b3", int(TRACE, 16), int(SPAN, 16), None, True)
    assert read(**{"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-flags": "1"}) == Extracted(
        "b3", int(TRACE, 16), int(SPAN, 16), None, True, debug=True
    )
    # A malformed id spoils the set; the sampling decision still counts.
    spoiled = read(**{"x-b3-traceid": TRACE, "x-b3-spanid": "xyz", "x-b3-sampled": "0"})
    assert spoiled == Extracted("b3", None, None, None, False)
    # b3 first, then w3c (Kong's preserve order); a W3C tracestate alone is not a b3 context.
    both = read(b3=f"{TRACE}-{SPAN}-0", traceparent=f"00-{'a' * 32}-{SPAN}-01")
    assert both is not None and both.fmt == "b3" and both.sampled is False
    w3c = read(tracestate="vendor=1", traceparent=f"00-{TRACE}-{SPAN}-01")
    assert w3c == Extracted("w3c", int(TRACE, 16), int(SPAN, 16), None, True)
    via_state = read(tracestate=f"b3={TRACE}-{SPAN}-1")
    assert via_state is not None and via_state.fmt == "b3" and via_state.trace_id == int(TRACE, 16)
    assert read(other="1") is None


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "traceparent",
                "b3",
                "tracestate",
                "x-b3-traceid",
                "x-b3-spanid",
                "x-b3-parentspanid",
                "x-b3-sampled",
                "x-b3-flags",
            ]
        ),
        st.one_of(
            st.text(max_size=80), st.sampled_from([f"00-{TRACE}-{SPAN}-01", f"{TRACE}-{SPAN}-d", TRACE, SPAN])
        ),
    )
)
def test_reading_any_client_headers_never_fails(headers: dict[str, str]) -> None:
    found = extract(headers, ("b3", "w3c"))
    if found is not None:
        assert found.trace_id is not None or found.sampled is not None
        assert found.trace_id is None or 0 < found.trace_id < 1 << 128
        assert found.span_id is None or 0 < found.span_id < 1 << 64


def test_deprecated_batch_fields_map_to_the_queue() -> None:
    queue = {"max_batch_size": 200, "max_coalescing_delay": 1}
    legacy = {"queue": queue, "batch_span_count": 50, "batch_flush_delay": 5}
    assert queue_settings(legacy) == {"max_batch_size": 50, "max_coalescing_delay": 5}
    # The old defaults, or a queue that says otherwise, win.
    assert queue_settings({**legacy, "batch_span_count": 200, "batch_flush_delay": 3}) == queue
    assert queue_settings({**legacy, "queue": {"max_batch_size": 10, "max_coalescing_delay": 2}}) == {
        "max_batch_size": 10,
        "max_coalescing_delay": 2,
    }


def test_headers_written_for_each_format() -> None:
    out = Outgoing(int(TRACE, 16), 0xA, 0xB, sampled=True)
    assert headers_for("w3c", out) == [("traceparent", f"00-{TRACE}-000000000000000a-01")]
    assert headers_for("b3", out) == [
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", "000000000000000a"),
        ("x-b3-parentspanid", "000000000000000b"),
        ("x-b3-sampled", "1"),
    ]
    assert headers_for("b3-single", out) == [("b3", f"{TRACE}-000000000000000a-1-000000000000000b")]
    # A 64-bit b3 trace id stays 64-bit in b3, and is padded for W3C; debug travels as a flag.
    short = Outgoing(int(TRACE[16:], 16), 0xA, None, sampled=False, debug=True, trace_id_bytes=8)
    assert headers_for("b3-single", short) == [("b3", f"{TRACE[16:]}-000000000000000a-d")]
    assert ("x-b3-flags", "1") in headers_for("b3", short)
    assert headers_for("w3c", short) == [("traceparent", f"00-{'0' * 16}{TRACE[16:]}-000000000000000a-00")]


def test_propagation_plan_maps_kong_legacy_header_type() -> None:
    def plan(**config: Any) -> Any:
        return plan_from_config({"propagation": {"default_format": "w3c"}, **config})

    preserve = plan(header_type="preserve")
    assert (preserve.extract, preserve.inject) == (("b3", "w3c"), ("preserve",))
    ignore = plan(header_type="ignore")
    assert (ignore.extract, ignore.inject) == ((), ("w3c",))
    b3 = plan(header_type="b3")
    assert (b3.extract, b3.inject) == (("b3", "w3c"), ("preserve", "b3"))
    # Any of extract/inject/clear set: propagation as given, header_type ignored.
    given_plan = plan_from_config(
        {"header_type": "b3", "propagation": {"inject": ["b3-single"], "default_format": "b3"}}
    )
    assert (given_plan.extract, given_plan.inject, given_plan.default_format) == ((), ("b3-single",), "b3")

    found_b3_single = Extracted("b3", 1, 2, single_header=True)
    assert inject_formats(preserve, found_b3_single) == ("b3-single",)
    assert inject_formats(preserve, None) == ("w3c",)
    assert inject_formats(b3, Extracted("b3", 1, 2)) == ("b3",)  # each format once
    assert inject_formats(b3, Extracted("w3c", 1, 2)) == ("w3c", "b3")


def test_sampling_follows_kong() -> None:
    trace_id = int(TRACE, 16)
    assert sampled_by_rate(trace_id, 1) and not sampled_by_rate(trace_id, 0)
    # The first 8 bytes, little-endian, against rate * 2**64.
    low_first = int.from_bytes(bytes.fromhex(TRACE[:16]), "little") / 2**64
    assert sampled_by_rate(trace_id, low_first + 0.01) and not sampled_by_rate(trace_id, low_first - 0.01)
    assert should_sample(None, trace_id, 1) and should_sample(True, trace_id, 1)
    assert not should_sample(False, trace_id, 1)  # the caller decided not to
    assert not should_sample(True, trace_id, 0)  # Kong's rate applies to a sampled caller too
    share = sum(sampled_by_rate(n << 64, 0.25) for n in range(0, 1 << 64, (1 << 64) // 4000)) / 4000
    assert 0.2 < share < 0.3


def test_otlp_encoding_decodes_to_the_spans() -> None:
    span = Span(
        int(TRACE, 16),
        0x1,
        0x2,
        "kong",
        2,
        10,
        20,
        (("http.status_code", 200), ("http.method", "GET"), ("ok", True), ("ratio", 0.5)),
        2,
    )
    root = Span(1, 0x3, 0, "root", 3, 1, 2, ())
    resource = otlp.resource_attributes("1.2.3", "node-1", {"service.name": "edge", "team": "a"})
    message = ExportTraceServiceRequest.FromString(otlp.encode_traces([span, root], resource))
    (resource_spans,) = message.resource_spans
    assert {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes} == {
        "service.name": "edge",
        "service.version": "1.2.3",
        "service.instance.id": "node-1",
        "team": "a",
    }
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("kong-internal", "0.1.0")
    first, second = scope_spans.spans
    assert first.trace_id.hex() == TRACE and first.span_id.hex() == "0000000000000001"
    assert first.parent_span_id.hex() == "0000000000000002" and second.parent_span_id == b""
    assert (first.name, first.kind, first.start_time_unix_nano, first.end_time_unix_nano) == (
        "kong",
        2,
        10,
        20,
    )
    assert {kv.key: _value(kv.value) for kv in first.attributes} == {
        "http.status_code": 200,
        "http.method": "GET",
        "ok": True,
        "ratio": 0.5,
    }
    assert first.attributes[0].value.WhichOneof("value") == "int_value"
    assert first.status.code == 2 and second.trace_id.hex() == "0" * 31 + "1"


# -- schema ----------------------------------------------------------------------------------------


def config_errors(config: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.load({"_format_version": "3.0", "plugins": [{"name": "opentelemetry", "config": config}]})
    return dict(info.value.fields["plugins"][0])


def loaded(config: dict[str, Any]) -> dict[str, Any]:
    document = declarative.load(
        {"_format_version": "3.0", "plugins": [{"name": "opentelemetry", "config": config}]}
    )
    return dict(document.of("plugins")[0]["config"])


def test_schema_defaults_shorthand_and_refusals() -> None:
    got = loaded({"traces_endpoint": "http://otel:4318/v1/traces"})
    assert (got["connect_timeout"], got["send_timeout"], got["read_timeout"]) == (1000, 5000, 5000)
    assert got["queue"]["max_batch_size"] == 200 and got["queue"]["max_coalescing_delay"] == 1
    assert got["header_type"] == "preserve" and got["sampling_rate"] is None
    assert got["propagation"] == {"extract": None, "clear": None, "inject": None, "default_format": "w3c"}
    # Kong's deprecated shorthand sets traces_endpoint.
    legacy = loaded({"endpoint": "http://otel:4318/v1/traces"})
    assert legacy["traces_endpoint"] == "http://otel:4318/v1/traces" and legacy["endpoint"] is None

    assert config_errors({}) == {
        "@entity": [
            "at least one of these fields must be non-empty: 'config.traces_endpoint', 'config.logs_endpoint'"
        ]
    }
    endpoint = {"traces_endpoint": "http://otel:4318/v1/traces"}
    assert config_errors({**endpoint, "sampling_rate": 1.5}) == {
        "config": {"sampling_rate": "value should be between 0 and 1"}
    }
    assert config_errors({**endpoint, "header_type": "zipkin"}) == {
        "config": {
            "header_type": "expected one of: preserve, ignore, b3, b3-single, w3c, jaeger, ot, aws, gcp, "
            "datadog"
        }
    }
    assert (
        "not supported by Zonegate"
        in config_errors({**endpoint, "header_type": "jaeger"})["config"]["header_type"]
    )
    errors = config_errors({**endpoint, "propagation": {"inject": ["w3c", "nope", "datadog"]}})["config"]
    inject = errors["propagation"]["inject"]
    assert inject[0] is None and inject[1].startswith("expected one of: preserve, w3c, b3")
    assert "datadog is not supported" in inject[2]
    assert errors["propagation"]["default_format"] == "required field missing"  # as in Kong
    assert config_errors({**endpoint, "propagation": {"extract": ["b3-single"], "default_format": "w3c"}})[
        "config"
    ]["propagation"]["extract"][0].startswith("expected one of:")
    assert config_errors({"traces_endpoint": "//otel:4318/v1/traces"}) == {
        "config": {"traces_endpoint": "missing scheme in url"}
    }
    assert config_errors({**endpoint, "logs_endpoint": "http://otel:4318/v1/logs"})["config"] == {
        "logs_endpoint": "logs_endpoint is not supported by Zonegate: it exports traces only"
    }
    assert config_errors({**endpoint, "http_response_header_for_traceid": "Bad Header"})["config"] == {
        "http_response_header_for_traceid": "bad header name 'Bad Header', allowed characters are A-Z, a-z, "
        "0-9, '_', and '-'"
    }
    assert config_errors({**endpoint, "resource_attributes": {"service.name": ""}})["config"] == {
        "resource_attributes": {"service.name": "length must be at least 1"}
    }


# -- end to end ------------------------------------------------------------------------------------


def test_spans_continue_the_caller_and_propagate_upstream(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream, collectors: Collectors
) -> None:
    collector = collectors()
    endpoint = collector.url
    node = start(
        zonegate_node_factory,
        echo_upstream,
        route(
            "traced",
            otel(
                endpoint,
                sampling_rate=1,
                headers={"X-Collector-Token": "secret"},
                resource_attributes={"service.name": "edge-gateway", "deployment.environment": "test"},
                http_response_header_for_traceid="X-Trace-Id",
            ),
        ),
        route(
            "b3",
            otel(
                endpoint,
                propagation={
                    "extract": ["b3"],
                    "inject": ["preserve"],
                    "clear": ["X-Drop"],
                    "default_format": "b3",
                },
            ),
        ),
        route("ignored", otel(endpoint, header_type="ignore")),
        route(
            "denied",  # ip-restriction answers before the tracing plugin's access phase runs
            otel(endpoint, http_response_header_for_traceid="X-Trace-Id"),
            {"name": "ip-restriction", "config": {"deny": ["127.0.0.1"]}},
        ),
        route(
            "terminated",  # request-termination answers after it: no upstream, no balancer span
            otel(endpoint),
            {"name": "request-termination", "config": {"status_code": 418}},
        ),
    )

    # A W3C caller: same trace, our root span's parent is the caller's span, and the upstream
    # sees the balancer span as its parent.
    status, headers, body = request(
        node, "GET", "/traced/items?page=2", headers={"traceparent": f"00-{TRACE}-{SPAN}-01"}
    )
    assert status == 200
    assert headers["x-trace-id"] == TRACE
    sent = parse_traceparent(upstream_saw(body)["traceparent"])
    assert sent is not None and sent[0] == int(TRACE, 16) and sent[2] is True
    upstream_parent = f"{sent[1]:016x}"
    assert upstream_parent != SPAN

    spans = wait_for(lambda: len(collector.of_trace(TRACE)) == 2 and collector.of_trace(TRACE))
    by_name = {span.name: span for span in spans}
    root, balancer = by_name["kong"], by_name["kong.balancer"]
    assert root.parent_id == SPAN and root.kind == 2
    assert balancer.span_id == upstream_parent and balancer.parent_id == root.span_id and balancer.kind == 3
    assert root.attributes == {
        "http.method": "GET",
        "http.url": "http://127.0.0.1/traced/items?page=2",
        "http.host": "127.0.0.1",
        "http.scheme": "http",
        "http.flavor": "1.1",
        "http.client_ip": "127.0.0.1",
        "net.peer.ip": "127.0.0.1",
        "kong.request.id": root.attributes["kong.request.id"],
        "http.status_code": 200,
        "http.route": "/traced",
        "kong.route.id": root.attributes["kong.route.id"],
        "kong.route.name": "traced",
        "kong.service.id": root.attributes["kong.service.id"],
        "kong.service.name": "svc",
    }
    assert len(root.attributes["kong.request.id"]) >= 16
    assert balancer.attributes["net.peer.ip"] == "127.0.0.1"
    assert balancer.attributes["net.peer.port"] == echo_upstream.port
    assert balancer.attributes["try_count"] == 1 and balancer.status == 0
    assert root.start <= balancer.start <= balancer.end <= root.end
    assert abs(root.start / 1e9 - time.time()) < 30
    assert root.resource["service.name"] == "edge-gateway"
    assert root.resource["deployment.environment"] == "test"
    assert root.resource["service.instance.id"] and root.resource["service.version"]
    assert root.scope == ("kong-internal", "0.1.0")
    assert collector.exports[0]["x-collector-token"] == "secret"
    assert collector.exports[0]["content-type"] == "application/x-protobuf"

    # No caller context: a new trace, announced to the client and the upstream; the status the
    # client got is recorded.
    status, headers, body = request(node, "GET", "/traced/new", headers={"X-Echo-Status": "503"})
    assert status == 503
    new_trace = headers["x-trace-id"]
    assert new_trace != TRACE and len(new_trace) == 32
    assert upstream_saw(body)["traceparent"].startswith(f"00-{new_trace}-")
    new_root = next(s for s in wait_for(lambda: collector.of_trace(new_trace)) if s.name == "kong")
    assert new_root.parent_id == "" and new_root.attributes["http.status_code"] == 503

    # b3: the single header comes back single, with the root span as parent; clear drops X-Drop.
    b3_trace = "a" * 16
    status, _, body = request(
        node, "GET", "/b3", headers={"b3": f"{b3_trace}-{SPAN}-1", "X-Drop": "x", "traceparent": "ignored"}
    )
    seen = upstream_saw(body)
    assert status == 200 and "x-drop" not in seen
    assert seen["traceparent"] == "ignored"  # w3c is not among this route's formats
    trace_hex, span_hex, flag, parent_hex = seen["b3"].split("-")
    assert (trace_hex, flag) == (b3_trace, "1") and span_hex != SPAN
    b3_spans = wait_for(
        lambda: len(collector.of_trace("0" * 16 + b3_trace)) == 2 and collector.of_trace("0" * 16 + b3_trace)
    )
    b3_root = next(s for s in b3_spans if s.name == "kong")
    assert b3_root.parent_id == SPAN and b3_root.span_id == parent_hex
    # Multi headers come back as multi headers; nothing found: default_format (b3).
    multi = upstream_saw(
        request(
            node, "GET", "/b3", headers={"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-Sampled": "1"}
        )[2]
    )
    assert multi["x-b3-traceid"] == TRACE and multi["x-b3-sampled"] == "1" and "b3" not in multi
    fresh = upstream_saw(request(node, "GET", "/b3")[2])
    assert len(fresh["x-b3-traceid"]) == 32 and fresh["x-b3-traceid"] != TRACE

    # header_type ignore: the caller's context is not read; w3c goes out anyway.
    ignored = upstream_saw(
        request(node, "GET", "/ignored", headers={"traceparent": f"00-{TRACE}-{SPAN}-01"})[2]
    )
    assert ignored["traceparent"].split("-")[1] != TRACE

    # Answered before the tracing plugin's access phase: a root span of its own trace.
    status, headers, _ = request(node, "GET", "/denied")
    assert status == 403
    denied = wait_for(lambda: collector.of_trace(headers["x-trace-id"]))
    assert [s.name for s in denied] == ["kong"] and denied[0].attributes["http.status_code"] == 403
    # Answered after it: the root span only, with the plugin's status.
    assert request(node, "GET", "/terminated", headers={"traceparent": f"00-{'b' * 32}-{SPAN}-01"})[0] == 418
    terminated = wait_for(lambda: collector.of_trace("b" * 32))
    time.sleep(0.3)
    assert [s.name for s in collector.of_trace("b" * 32)] == ["kong"]
    assert terminated[0].attributes["http.status_code"] == 418


def test_sampling_rate_and_the_callers_decision(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream, collectors: Collectors
) -> None:
    collector = collectors()
    node = start(
        zonegate_node_factory,
        echo_upstream,
        route("always", otel(collector.url, sampling_rate=1)),
        route("never", otel(collector.url, sampling_rate=0)),
    )
    always: list[str] = []
    for i in range(10):
        always_trace = f"{i + 1:032x}"
        # rate 1 samples everything the caller did not refuse; rate 0 samples nothing.
        for path, flag in (("/always", "01"), ("/never", "01"), ("/never", "00")):
            _, _, body = request(
                node, "GET", path, headers={"traceparent": f"00-{always_trace}-{SPAN}-{flag}"}
            )
            sent = upstream_saw(body)["traceparent"]
            assert sent.endswith("-01" if path == "/always" else "-00"), (path, sent)
        always.append(always_trace)
        refused = f"{i + 100:032x}"
        _, _, body = request(node, "GET", "/always", headers={"traceparent": f"00-{refused}-{SPAN}-00"})
        assert upstream_saw(body)["traceparent"].endswith("-00")
        request(node, "GET", "/always/new")
        request(node, "GET", "/never/new")
    wait_for(lambda: len([s for s in collector.spans if s.name == "kong"]) >= 20)
    time.sleep(0.5)  # anything else would have arrived by now
    roots = [s for s in collector.spans if s.name == "kong"]
    assert len(roots) == 20 and all(s.attributes["http.route"] == "/always" for s in roots)
    assert {s.trace_id for s in roots} >= set(always)
    assert len(collector.spans) == 40  # each with its balancer span


def test_a_down_or_failing_collector_never_slows_requests_and_spans_follow_later(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream, collectors: Collectors
) -> None:
    sick = collectors()
    sick.mode = "fail"  # answers 500 after a second
    down_port = free_port()  # nothing listens there yet
    retry = {"initial_retry_delay": 0.05, "max_retry_delay": 0.2}
    node = start(
        zonegate_node_factory,
        echo_upstream,
        route("sick", otel(sick.url, queue=retry)),
        route(
            "down",
            otel(
                f"http://127.0.0.1:{down_port}/v1/traces",
                queue={**retry, "max_batch_size": 2, "max_entries": 6},
            ),
        ),
    )
    traces: dict[str, list[str]] = {"sick": [], "down": []}
    for i in range(10):
        for name in ("sick", "down"):
            trace = f"{i + 1:08x}{name.encode().hex():0>24}"
            started = time.monotonic()
            status, _, _ = request(node, "GET", f"/{name}", headers={"traceparent": f"00-{trace}-{SPAN}-01"})
            assert status == 200
            assert time.monotonic() - started < 0.5  # the request never waits for the collector
            traces[name].append(trace)
    wait_for(lambda: sick.failures >= 2)
    wait_for(lambda: "log_queue.full" in node.read_log())  # the bounded queue dropped spans

    # The collectors come back: the batch being retried goes out, then what the queue kept.
    sick.mode = "ok"
    wait_for(lambda: all(len(sick.of_trace(t)) == 2 for t in traces["sick"]))
    back = collectors(down_port)
    wait_for(lambda: len(back.spans) >= 8)
    time.sleep(0.3)
    kept = {s.trace_id for s in back.spans}
    # max_batch_size 2: the first request's two spans were in flight; max_entries 6 kept the
    # last three requests' spans; the others were dropped.
    assert len(back.spans) == 8
    assert kept == {traces["down"][0], *traces["down"][-3:]}
    assert request(node, "GET", "/down")[0] == 200


def test_queued_spans_are_sent_when_the_node_stops(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream, collectors: Collectors
) -> None:
    collector = collectors()
    node = start(
        zonegate_node_factory,
        echo_upstream,
        route("held", otel(collector.url, queue={"max_coalescing_delay": 60, "max_batch_size": 100})),
    )
    for _ in range(3):
        assert request(node, "GET", "/held")[0] == 200
    time.sleep(0.3)
    assert collector.spans == []  # still coalescing
    assert node.stop() == 0
    assert len(collector.spans) == 6
    assert "Unclosed client session" not in node.read_log()
