"""Upstreams and targets through a real node: each algorithm's distribution, health checks out and back."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from typing import Any

from harness.echo_upstream import EchoUpstream
from harness.zonegate_node import ZonegateNode


def get(
    node: ZonegateNode, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        document = json.loads(body) if body.startswith(b"{") else {}
        return response.status, document, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def upstream_config(upstreams: list[EchoUpstream], weights: list[int], **upstream: Any) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "upstreams": [
            {
                "name": "backend.internal",
                **upstream,
                "targets": [
                    {"target": f"127.0.0.1:{u.port}", "weight": w}
                    for u, w in zip(upstreams, weights, strict=True)
                ],
            }
        ],
        "services": [{"name": "svc", "host": "backend.internal", "port": 80, "routes": [{"paths": ["/"]}]}],
    }


def test_weighted_round_robin(zonegate_node_factory: Any, echo_upstream_factory: Any) -> None:
    a, b = echo_upstream_factory("a"), echo_upstream_factory("b")
    node = zonegate_node_factory(upstream_config([a, b], [300, 100]))
    seen = Counter(get(node, "/rr")[1]["upstream"] for _ in range(200))
    assert seen == {"a": 150, "b": 50}
    # Kong sends the target's host (with its port) as Host.
    assert get(node, "/h")[1]["headers_lower"]["host"].startswith("127.0.0.1:")


def test_weight_zero_gets_nothing(zonegate_node_factory: Any, echo_upstream_factory: Any) -> None:
    a, b = echo_upstream_factory("a"), echo_upstream_factory("b")
    node = zonegate_node_factory(upstream_config([a, b], [100, 0]))
    assert {get(node, "/")[1]["upstream"] for _ in range(20)} == {"a"}


def test_consistent_hashing_on_a_header(zonegate_node_factory: Any, echo_upstream_factory: Any) -> None:
    ups = [echo_upstream_factory(name) for name in "abc"]
    node = zonegate_node_factory(
        upstream_config(
            ups, [100, 100, 100], algorithm="consistent-hashing", hash_on="header", hash_on_header="X-User"
        )
    )
    by_user = {}
    for user in range(30):
        first = get(node, "/", {"X-User": f"user-{user}"})[1]["upstream"]
        again = {get(node, "/", {"X-User": f"user-{user}"})[1]["upstream"] for _ in range(3)}
        assert again == {first}
        by_user[user] = first
    assert len(set(by_user.values())) >= 2  # the users spread over targets


def test_consistent_hashing_on_a_cookie_sets_it(
    zonegate_node_factory: Any, echo_upstream_factory: Any
) -> None:
    ups = [echo_upstream_factory(name) for name in "ab"]
    node = zonegate_node_factory(
        upstream_config(
            ups, [100, 100], algorithm="consistent-hashing", hash_on="cookie", hash_on_cookie="zg-sticky"
        )
    )
    status, _, headers = get(node, "/")
    assert status == 200
    cookie = headers["set-cookie"]
    assert cookie.startswith("zg-sticky=")
    value = cookie.split(";")[0]
    targets = {get(node, "/", {"Cookie": value})[1]["upstream"] for _ in range(5)}
    assert len(targets) == 1


def test_least_connections_prefers_the_idle_target(
    zonegate_node_factory: Any, echo_upstream_factory: Any
) -> None:
    a, b = echo_upstream_factory("a"), echo_upstream_factory("b")
    node = zonegate_node_factory(upstream_config([a, b], [100, 100], algorithm="least-connections"))
    busy: list[str] = []
    holder = threading.Thread(
        target=lambda: busy.append(get(node, "/slow", {"X-Echo-Delay": "1.0"})[1]["upstream"])
    )
    holder.start()
    time.sleep(0.3)
    # One target holds a slow request: (1 + 1) / 100 loses to (0 + 1) / 100, every time.
    quick = Counter(get(node, "/quick")[1]["upstream"] for _ in range(10))
    holder.join()
    (slow_target,) = busy
    other = "b" if slow_target == "a" else "a"
    assert quick == {other: 10}


def test_active_health_checks_take_a_target_out_and_back(
    zonegate_node_factory: Any, echo_upstream_factory: Any
) -> None:
    a, b = echo_upstream_factory("a"), echo_upstream_factory("b")
    checks = {
        "active": {
            "http_path": "/health",
            "timeout": 0.5,
            "healthy": {"interval": 0.1, "successes": 1},
            "unhealthy": {"interval": 0.1, "tcp_failures": 1, "http_failures": 1},
        }
    }
    node = zonegate_node_factory(upstream_config([a, b], [100, 100], healthchecks=checks))
    assert {get(node, "/")[1]["upstream"] for _ in range(10)} == {"a", "b"}
    b.stop()
    wait_until(lambda: health_of(node, b) == "UNHEALTHY")
    assert {get(node, "/")[1]["upstream"] for _ in range(10)} == {"a"}
    b.start()
    wait_until(lambda: health_of(node, b) == "HEALTHY")
    assert {get(node, "/")[1]["upstream"] for _ in range(10)} == {"a", "b"}


def test_passive_checks_and_no_healthy_target_is_503(
    zonegate_node_factory: Any, echo_upstream_factory: Any
) -> None:
    (a,) = (echo_upstream_factory("a"),)
    checks = {"passive": {"unhealthy": {"http_failures": 2, "http_statuses": [500]}}}
    node = zonegate_node_factory(upstream_config([a], [100], healthchecks=checks))
    for _ in range(2):
        assert get(node, "/", {"X-Echo-Status": "500"})[0] == 500
    status, document, _ = get(node, "/")
    assert status == 503
    assert document["message"] == "failure to get a peer from the ring-balancer"


def health_of(node: ZonegateNode, upstream: EchoUpstream) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", node.status_port, timeout=5)
    try:
        conn.request("GET", "/upstreams/backend.internal/health")
        document = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    for target in document["data"]:
        if target["target"] == f"127.0.0.1:{upstream.port}":
            return str(target["health"])
    raise AssertionError(document)


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_a_retried_request_keeps_its_body(zonegate_node_factory: Any, echo_upstream_factory: Any) -> None:
    """A target that takes the request and closes without answering: the retry carries the same body."""
    import contextlib
    import socket

    good = echo_upstream_factory("good")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    bad_port = listener.getsockname()[1]
    stop = threading.Event()

    def swallow() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)  # read the request, then hang up without a word

    thread = threading.Thread(target=swallow, daemon=True)
    thread.start()
    try:
        config = {
            "_format_version": "3.0",
            "upstreams": [
                {
                    "name": "backend.internal",
                    "targets": [{"target": f"127.0.0.1:{good.port}"}, {"target": f"127.0.0.1:{bad_port}"}],
                }
            ],
            "services": [
                {"name": "svc", "host": "backend.internal", "retries": 3, "routes": [{"paths": ["/"]}]}
            ],
        }
        node = zonegate_node_factory(config)
        for index in range(6):
            conn = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=10)
            try:
                conn.request("PUT", f"/item/{index}", body=f"payload-{index}".encode())
                response = conn.getresponse()
                document = json.loads(response.read())
            finally:
                conn.close()
            assert response.status == 200
            assert document["upstream"] == "good"
            assert document["body"] == f"payload-{index}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()
