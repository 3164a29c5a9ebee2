"""prometheus: Kong's metric names, labels and buckets on the Status API's /metrics, through real nodes."""

from __future__ import annotations

import re
import urllib.request
from typing import Any

from data_plane.test_proxy_e2e import request, service
from harness.echo_upstream import EchoUpstream
from zonegate.plugins.prometheus.exporter import exposition
from zonegate.plugins.prometheus.metrics import KONG_LATENCY_BUCKETS, Registry, merge, render

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """A strict little parser of the text format: every line is a comment or a well-formed sample,
    every sample's family has one TYPE line before it."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert name not in types, f"TYPE twice for {name}"
            types[name] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        found = _SAMPLE.match(line)
        assert found, f"bad line: {line!r}"
        name, _, raw_labels, value = found.groups()
        labels: list[tuple[str, str]] = []
        rest = raw_labels or ""
        while rest:
            label = _LABEL.match(rest)
            assert label, f"bad labels: {raw_labels!r}"
            labels.append((label.group(1), label.group(2)))
            rest = rest[label.end() :]
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no TYPE line"
        samples[(name, frozenset(labels))] = float(value)
    return samples, types


def scrape(node: Any) -> tuple[Samples, dict[str, str], str]:
    with urllib.request.urlopen(f"{node.status_url}/metrics", timeout=10) as response:
        content_type = response.headers["Content-Type"]
        samples, types = parse(response.read().decode())
    return samples, types, content_type


def pick(samples: Samples, name: str, **labels: str) -> list[tuple[frozenset[tuple[str, str]], float]]:
    wanted = set(labels.items())
    return [(k[1], v) for k, v in samples.items() if k[0] == name and wanted <= k[1]]


def value(samples: Samples, name: str, **labels: str) -> float:
    found = pick(samples, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return found[0][1]


def test_render_and_merge_are_cumulative_and_escaped() -> None:
    one, two = Registry(), Registry()
    one.observe("kong_kong_latency_ms", ("s", 'r"1', "default"), 3)
    two.observe("kong_kong_latency_ms", ("s", 'r"1', "default"), 5000)
    two.inc("kong_http_requests_total", ("s", "r", "200", "service", "default", ""))
    merged = merge([one.snapshot(), two.snapshot()])
    samples, types = parse(render(merged))
    assert types == {"kong_http_requests_total": "counter", "kong_kong_latency_ms": "histogram"}
    labels = {"service": "s", "route": 'r\\"1', "workspace": "default"}
    assert value(samples, "kong_kong_latency_ms_bucket", le="00002.0", **labels) == 0
    assert value(samples, "kong_kong_latency_ms_bucket", le="00005.0", **labels) == 1
    assert value(samples, "kong_kong_latency_ms_bucket", le="01000.0", **labels) == 1
    assert value(samples, "kong_kong_latency_ms_bucket", le="+Inf", **labels) == 2
    assert value(samples, "kong_kong_latency_ms_count", **labels) == 2
    assert value(samples, "kong_kong_latency_ms_sum", **labels) == 5003
    assert len(pick(samples, "kong_kong_latency_ms_bucket", **labels)) == len(KONG_LATENCY_BUCKETS) + 1


def test_metrics_follow_traffic_with_kong_names(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    everything = {
        "per_consumer": True,
        "status_code_metrics": True,
        "latency_metrics": True,
        "bandwidth_metrics": True,
        "upstream_health_metrics": True,
    }
    target = f"127.0.0.1:{echo_upstream.port}"
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    **service("billing", echo_upstream),
                    "routes": [
                        {"name": "pay", "paths": ["/pay"]},
                        {
                            "name": "closed",
                            "paths": ["/closed"],
                            "plugins": [{"name": "request-termination", "config": {"status_code": 503}}],
                        },
                    ],
                    "plugins": [
                        {"name": "prometheus", "config": everything},
                        {"name": "key-auth", "config": {"anonymous": "guest"}},
                    ],
                },
                # Kong's defaults: every family off, so this service adds no series.
                {
                    **service("quiet", echo_upstream),
                    "routes": [{"name": "hush", "paths": ["/hush"]}],
                    "plugins": [{"name": "prometheus"}],
                },
                {
                    "name": "pooled",
                    "host": "pool",
                    "routes": [{"name": "lb", "paths": ["/lb"]}],
                },
            ],
            "upstreams": [{"name": "pool", "targets": [{"target": target}]}],
            "consumers": [
                {"username": "alice", "keyauth_credentials": [{"key": "alice-key"}]},
                {"username": "guest"},
            ],
        }
    )
    samples, types, content_type = scrape(node)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "kong_http_requests_total" not in types  # no traffic yet
    assert [v for _, v in pick(samples, "kong_node_info")] == [1]
    # Upstream health, by Kong's labels: one series per state, 1 on the current one.
    health = dict(
        (dict(labels)["state"], v)
        for labels, v in pick(
            samples, "kong_upstream_target_health", upstream="pool", target=target, address=target
        )
    )
    assert health == {"healthchecks_off": 1, "healthy": 0, "unhealthy": 0, "dns_error": 0}
    requests_before = value(samples, "kong_nginx_requests_total")

    for _ in range(3):
        assert request(node, "GET", "/pay/x", headers={"apikey": "alice-key"})[0] == 200
    assert request(node, "POST", "/pay/y", body=b"x" * 1000)[0] == 200  # anonymous: guest
    assert request(node, "GET", "/closed")[0] == 503
    assert request(node, "GET", "/hush")[0] == 200
    assert request(node, "GET", "/lb")[0] == 200

    samples, types, _ = scrape(node)
    pay = {"service": "billing", "route": "pay", "workspace": "default"}
    assert (
        value(samples, "kong_http_requests_total", code="200", source="service", consumer="alice", **pay) == 3
    )
    assert (
        value(samples, "kong_http_requests_total", code="200", source="service", consumer="guest", **pay) == 1
    )
    assert (
        value(
            samples,
            "kong_http_requests_total",
            service="billing",
            route="closed",
            code="503",
            source="kong",
            consumer="guest",
        )
        == 1
    )
    # Latency histograms: every request observed once; the terminated one never reached upstream.
    assert value(samples, "kong_request_latency_ms_count", **pay) == 4
    assert value(samples, "kong_upstream_latency_ms_count", **pay) == 4
    assert value(samples, "kong_kong_latency_ms_count", **pay) == 4
    closed = {"service": "billing", "route": "closed", "workspace": "default"}
    assert value(samples, "kong_request_latency_ms_count", **closed) == 1
    assert not pick(samples, "kong_upstream_latency_ms_count", **closed)
    assert value(samples, "kong_request_latency_ms_bucket", le="+Inf", **pay) == 4
    # Bandwidth: the 1000-byte body is in guest's ingress; egress includes the echoed bodies.
    guest_in = value(samples, "kong_bandwidth_bytes", direction="ingress", consumer="guest", **pay)
    alice_in = value(samples, "kong_bandwidth_bytes", direction="ingress", consumer="alice", **pay)
    assert guest_in > 1000 and 0 < alice_in < guest_in
    assert value(samples, "kong_bandwidth_bytes", direction="egress", consumer="alice", **pay) > 0
    # The quiet instance and the plugin-less service add nothing.
    for name in ("kong_http_requests_total", "kong_bandwidth_bytes", "kong_request_latency_ms_count"):
        assert not pick(samples, name, service="quiet")
        assert not pick(samples, name, service="pooled")
    # Node-level counters moved with the traffic.
    assert value(samples, "kong_nginx_requests_total") >= requests_before + 7
    assert value(samples, "kong_nginx_connections_total", state="accepted") >= 7


def test_workers_are_summed(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    **service("svc", echo_upstream),
                    "routes": [{"name": "r", "paths": ["/"]}],
                    "plugins": [{"name": "prometheus", "config": {"status_code_metrics": True}}],
                }
            ],
        },
        {"ZONEGATE_WORKERS": "2"},
    )
    for _ in range(20):  # new connections each time: the kernel spreads them over both workers
        assert request(node, "GET", "/x")[0] == 200
    samples, _, _ = scrape(node)
    labels = {"service": "svc", "route": "r", "code": "200", "source": "service", "consumer": ""}
    assert value(samples, "kong_http_requests_total", **labels) == 20
    assert not pick(samples, "kong_upstream_target_health")  # no instance asked for it


def test_node_level_families_for_a_hybrid_data_plane() -> None:
    text = exposition(
        node_id="n-1",
        version="9.9.9",
        stats={"connections_accepted": 4, "connections_active": 1, "total_requests": 7},
        collected={"snapshots": [], "upstream_health": [["pool", [{"target": "gone:80", "data": {}}]]]},
        clustering={
            "bus_connected": True,
            "bus_reconnects": 2,
            "config_version": 42,
            "config_hash": "a" * 32,
            "sync_status": "normal",
        },
    )
    samples, types = parse(text)
    node = {"node_id": "n-1", "subsystem": "http"}
    assert value(samples, "kong_nginx_connections_total", state="accepted", **node) == 4
    assert value(samples, "kong_nginx_requests_total", **node) == 7
    assert value(samples, "kong_node_info", node_id="n-1", version="9.9.9") == 1
    assert value(samples, "kong_upstream_target_health", target="gone:80", state="dns_error") == 1
    assert value(samples, "kong_upstream_target_health", target="gone:80", state="healthy") == 0
    assert value(samples, "kong_control_plane_connected") == 1
    assert value(samples, "zonegate_data_plane_config_version") == 42
    assert (
        value(samples, "zonegate_data_plane_config_hash_info", config_hash="a" * 32, sync_status="normal")
        == 1
    )
    assert types["zonegate_data_plane_bus_reconnects_total"] == "counter"
    assert "kong_http_requests_total" not in types
