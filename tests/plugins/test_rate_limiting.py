"""rate-limiting: Kong's schema, the local policy through a real node, and the cluster policy shared by
two real data planes over the bus (and what happens when the bus dies)."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest

from data_plane.test_proxy_e2e import request, service
from harness.echo_upstream import EchoUpstream
from harness.hybrid import HybridCluster, wait_for
from harness.zonegate_node import ZonegateNode
from zonegate.core import declarative
from zonegate.core.errors import DeclarativeConfigError
from zonegate.plugins.rate_limiting.windows import seconds_left, window_start


def config_errors(config: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.load({"_format_version": "3.0", "plugins": [{"name": "rate-limiting", "config": config}]})
    return dict(info.value.fields["plugins"][0])


def away_from_the_minute_edge(margin: float = 12.0) -> None:
    """Counting tests use minute windows: start them where the window cannot roll over midway."""
    now = time.time()
    left = 60 - now % 60
    if left < margin:
        time.sleep(left + 0.05)


# -- schema ----------------------------------------------------------------------------------------


def test_schema_defaults_and_kong_checks() -> None:
    config = declarative.load(
        {"_format_version": "3.0", "plugins": [{"name": "rate-limiting", "config": {"minute": 5}}]}
    )
    got = config.of("plugins")[0]["config"]
    assert {k: got[k] for k in ("minute", "limit_by", "policy", "fault_tolerant", "hide_client_headers")} == {
        "minute": 5,
        "limit_by": "consumer",
        "policy": "local",
        "fault_tolerant": True,
        "hide_client_headers": False,
    }
    assert (got["error_code"], got["error_message"], got["sync_rate"]) == (429, "API rate limit exceeded", -1)

    assert config_errors({}) == {
        "@entity": [
            "at least one of these fields must be non-empty: 'config.second', 'config.minute', "
            "'config.hour', 'config.day', 'config.month', 'config.year'"
        ]
    }
    assert config_errors({"second": 10, "hour": 5}) == {
        "config": {"@entity": ["The limit for hour(5.0) cannot be lower than the limit for second(10.0)"]}
    }
    assert config_errors({"minute": 0}) == {"config": {"minute": "value must be greater than 0"}}
    assert config_errors({"minute": 5, "limit_by": "header"})["config"] == {
        "header_name": "required field missing"
    }
    assert config_errors({"minute": 5, "limit_by": "path"})["config"] == {"path": "required field missing"}
    redis = config_errors({"minute": 5, "policy": "redis"})["config"]["policy"]
    assert "not supported" in redis and "cluster" in redis
    # Kong exports carry Redis settings even with another policy: they load.
    declarative.load(
        {
            "_format_version": "3.0",
            "plugins": [
                {
                    "name": "rate-limiting",
                    "config": {"minute": 5, "redis": {"port": 6379}, "redis_timeout": 2000},
                }
            ],
        }
    )


def test_windows_are_kongs_fixed_windows() -> None:
    now = 1_700_000_123.5  # 2023-11-14T22:15:23.5Z
    assert window_start("second", now) == 1_700_000_123
    assert window_start("minute", now) == 1_700_000_100
    assert window_start("hour", now) == 1_699_999_200
    assert window_start("day", now) == 1_699_920_000
    assert window_start("month", now) == 1_698_796_800  # 2023-11-01
    assert window_start("year", now) == 1_672_531_200  # 2023-01-01
    assert seconds_left("minute", 1_700_000_100, now) == 37
    assert seconds_left("second", 1_700_000_123, now) == 1  # never 0


# -- local policy through a real node ----------------------------------------------------------------


def _limited(name: str, upstream: EchoUpstream, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        **service(name, upstream),
        "routes": [{"name": name, "paths": [f"/{name}"]}],
        "plugins": [{"name": "rate-limiting", "config": config}],
        **extra,
    }


def from_ip(node: ZonegateNode, ip: str, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=15, source_address=(ip, 0))
    try:
        return request(node, "GET", path, connection=connection)
    finally:
        connection.close()


def test_local_policy(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                _limited("ip", echo_upstream, {"minute": 3, "hour": 10, "limit_by": "ip"}),
                _limited(
                    "tenant", echo_upstream, {"hour": 2, "limit_by": "header", "header_name": "x-tenant"}
                ),
                _limited(
                    "hidden",
                    echo_upstream,
                    {"hour": 1, "hide_client_headers": True, "error_code": 503, "error_message": "slow down"},
                ),
                {
                    **_limited("auth", echo_upstream, {"hour": 1}),
                    "plugins": [{"name": "key-auth"}, {"name": "rate-limiting", "config": {"hour": 1}}],
                },
            ],
            "consumers": [
                {"username": "alice", "keyauth_credentials": [{"key": "alice-key"}]},
                {"username": "bob", "keyauth_credentials": [{"key": "bob-key"}]},
                {
                    "username": "vip",
                    "keyauth_credentials": [{"key": "vip-key"}],
                    "plugins": [{"name": "rate-limiting", "config": {"hour": 3}}],
                },
            ],
        }
    )
    away_from_the_minute_edge()
    # Two periods: each has its headers; RateLimit-* follow the tightest (Kong 3.x).
    for remaining in (2, 1, 0):
        status, headers, _ = request(node, "GET", "/ip/x")
        assert status == 200
        assert headers["x-ratelimit-limit-minute"] == "3" and headers["x-ratelimit-limit-hour"] == "10"
        assert headers["x-ratelimit-remaining-minute"] == str(remaining)
        assert headers["x-ratelimit-remaining-hour"] == str(7 + remaining)
        assert headers["ratelimit-limit"] == "3" and headers["ratelimit-remaining"] == str(remaining)
        assert 1 <= int(headers["ratelimit-reset"]) <= 60
    status, headers, body = request(node, "GET", "/ip/x")
    assert status == 429
    assert json.loads(body)["message"] == "API rate limit exceeded"
    assert headers["x-ratelimit-remaining-minute"] == "0"
    assert headers["x-ratelimit-remaining-hour"] == "7"  # a refused request does not count
    assert headers["ratelimit-remaining"] == "0"
    assert headers["retry-after"] == headers["ratelimit-reset"]
    # Another client IP has its own count.
    status, headers, _ = from_ip(node, "127.0.0.2", "/ip/x")
    assert (status, headers["x-ratelimit-remaining-minute"]) == (200, "2")

    # limit_by header: per header value; without the header, per client IP.
    tenant_a = {"x-tenant": "a"}
    assert [request(node, "GET", "/tenant", headers=tenant_a)[0] for _ in range(3)] == [200, 200, 429]
    assert request(node, "GET", "/tenant", headers={"x-tenant": "b"})[0] == 200
    assert [request(node, "GET", "/tenant")[0] for _ in range(3)] == [200, 200, 429]

    # hide_client_headers, error_code and error_message.
    status, headers, _ = request(node, "GET", "/hidden")
    assert status == 200 and not any("ratelimit" in name for name in headers)
    status, headers, body = request(node, "GET", "/hidden")
    assert (status, json.loads(body)["message"]) == (503, "slow down")
    assert "retry-after" not in headers and not any("ratelimit" in name for name in headers)

    # limit_by consumer (the default), and a consumer-scoped instance wins over the service's.
    def auth(key: str) -> tuple[int, dict[str, str]]:
        status, headers, _ = request(node, "GET", "/auth", headers={"apikey": key})
        return status, headers

    assert [auth("alice-key")[0] for _ in range(2)] == [200, 429]
    assert auth("bob-key")[0] == 200  # counted apart from alice
    vip = [auth("vip-key") for _ in range(4)]
    assert [status for status, _ in vip] == [200, 200, 200, 429]
    assert vip[0][1]["x-ratelimit-limit-hour"] == "3"


# -- cluster policy: two data planes, one count ---------------------------------------------------------


def _get(node: ZonegateNode, path: str) -> tuple[int, dict[str, str], bytes]:
    return request(node, "GET", path)


@pytest.mark.slow
def test_cluster_policy_is_shared_by_every_data_plane(
    cluster: HybridCluster, echo_upstream: EchoUpstream
) -> None:
    cp = cluster.add_control_plane()
    dp_a = cluster.add_data_plane(labels="zone:a")
    dp_b = cluster.add_data_plane(labels="zone:b")
    assert cp.api("POST", "/services", {"name": "echo", "url": echo_upstream.url})[0] == 201
    assert cp.api("POST", "/services/echo/routes", {"name": "shared", "paths": ["/shared"]})[0] == 201
    assert cp.api("POST", "/services/echo/routes", {"name": "strict", "paths": ["/strict"]})[0] == 201
    limited = {"name": "rate-limiting", "config": {"minute": 5, "policy": "cluster", "limit_by": "ip"}}
    assert cp.api("POST", "/routes/shared/plugins", limited)[0] == 201
    strict = {"name": "rate-limiting", "config": {"hour": 1000, "policy": "cluster", "fault_tolerant": False}}
    assert cp.api("POST", "/routes/strict/plugins", strict)[0] == 201
    for node in (dp_a, dp_b):
        # /strict serves once the whole config (both plugins) is there; /shared is left uncounted.
        wait_for(
            lambda node=node: "x-ratelimit-limit-hour" in _get(node, "/strict")[1],
            20,
            f"{node.proxy_url} to serve the rate-limited routes",
        )

    away_from_the_minute_edge()
    answers = [_get((dp_a, dp_b)[i % 2], "/shared/x") for i in range(7)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 200, 200, 429, 429]
    assert [h["x-ratelimit-remaining-minute"] for _, h, _ in answers] == ["4", "3", "2", "1", "0", "0", "0"]
    assert json.loads(answers[5][2])["message"] == "API rate limit exceeded"
    assert int(answers[5][1]["retry-after"]) >= 1

    # The bus dies: fault_tolerant counts locally and proxies; the strict instance answers 500.
    cluster.nats.kill()
    status, headers, _ = wait_for(
        lambda: (answer := _get(dp_a, "/shared/x"))[0] == 200 and answer, 10, "a local count"
    )
    assert headers["x-ratelimit-limit-minute"] == "5"
    status, _, body = _get(dp_b, "/strict")
    assert (status, json.loads(body)["message"]) == (500, "An unexpected error occurred")
