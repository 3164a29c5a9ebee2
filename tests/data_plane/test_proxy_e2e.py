"""The proxy end to end: ``zonegate start`` as a real process, a declarative file, real upstreams."""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any

import pytest

from harness.echo_upstream import EchoUpstream, filler
from harness.zonegate_node import ZonegateNode


def request(
    node: ZonegateNode,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    connection: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = connection or http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        if connection is None:
            conn.close()


def echo(body: bytes) -> dict[str, Any]:
    return dict(json.loads(body))


def service(name: str, upstream: EchoUpstream, **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": f"{upstream.url}{extra.pop('path', '')}", **extra}


def test_routes_by_path_and_strips_the_prefix(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                service(
                    "svc",
                    echo_upstream,
                    path="/base",
                    routes=[
                        {"name": "strip", "paths": ["/api"]},
                        {"name": "keep", "paths": ["/keep"], "strip_path": False},
                    ],
                )
            ],
        }
    )
    status, headers, body = request(node, "GET", "/api/users?limit=5", headers={"X-Custom": "yes"})
    assert status == 200, body
    seen = echo(body)
    assert seen["path"] == "/base/users"
    assert seen["query"] == "limit=5"
    lower = seen["headers_lower"]
    assert lower["x-custom"] == "yes"
    assert lower["host"] == f"127.0.0.1:{echo_upstream.port}"
    assert lower["x-forwarded-for"] == "127.0.0.1"
    assert lower["x-real-ip"] == "127.0.0.1"
    assert lower["x-forwarded-proto"] == "http"
    assert lower["x-forwarded-host"] == "127.0.0.1"
    assert lower["x-forwarded-port"] == str(node.proxy_port)
    assert lower["x-forwarded-path"] == "/api/users"
    assert lower["x-forwarded-prefix"] == "/api"
    assert lower["via"].startswith("1.1 zonegate/")
    assert headers["via"].startswith("1.1 zonegate/")
    assert int(headers["x-zonegate-upstream-latency"]) >= 0
    assert int(headers["x-zonegate-proxy-latency"]) >= 0
    assert len(headers["x-zonegate-request-id"]) == 32

    status, _, body = request(node, "GET", "/keep/me")
    assert status == 200
    assert echo(body)["path"] == "/base/keep/me"


def test_no_route_is_kongs_404(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=[{"paths": ["/a"]}])]}
    )
    status, headers, body = request(node, "GET", "/nope")
    assert status == 404
    assert headers["content-type"].startswith("application/json")
    document = json.loads(body)
    assert document["message"] == "no Route matched with those values"
    assert document["request_id"] == headers["x-zonegate-request-id"]


def test_keep_alive_reuses_both_connections(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=[{"paths": ["/"]}])]}
    )
    conn = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=10)
    try:
        for index in range(20):
            status, _, body = request(node, "POST", f"/n/{index}", body=b"x" * index, connection=conn)
            assert status == 200
            assert echo(body)["body"] == "x" * index
    finally:
        conn.close()
    assert echo_upstream.requests_served == 20
    assert echo_upstream.connections_accepted == 1


def test_pipelined_requests_are_answered_in_order(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=[{"paths": ["/"]}])]}
    )
    with socket.create_connection(("127.0.0.1", node.proxy_port), timeout=10) as sock:
        burst = b"".join(
            b"GET /p/%d HTTP/1.1\r\nHost: x\r\nX-Echo-Delay: %s\r\n\r\n" % (i, b"0.05" if i == 0 else b"0")
            for i in range(5)
        )
        sock.sendall(burst)
        data = read_responses(sock, 5)
    paths = [json.loads(body)["path"] for _, body in data]
    assert paths == [f"/p/{i}" for i in range(5)]


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    reader = sock.makefile("rb")
    out = []
    for _ in range(count):
        status_line = reader.readline()
        status = int(status_line.split()[1])
        length = 0
        chunked = False
        while True:
            line = reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            if name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            body = b""
            while True:
                size = int(reader.readline().strip(), 16)
                if size == 0:
                    reader.readline()
                    break
                body += reader.read(size)
                reader.readline()
        else:
            body = reader.read(length)
        out.append((status, body))
    return out


def test_large_bodies_stream_both_ways(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                service(
                    "svc",
                    echo_upstream,
                    routes=[{"paths": ["/"], "request_buffering": False, "response_buffering": False}],
                )
            ],
        }
    )
    baseline_kib = node.status()["memory"]["workers_rss_kib"]
    size = 96 * 1024 * 1024
    status, _, body = request(node, "GET", "/big", headers={"X-Echo-Body-Size": str(size)})
    assert status == 200
    assert len(body) == size
    assert body[:1000] == filler(1000)
    upload = b"u" * (8 * 1024 * 1024)
    status, _, body = request(node, "POST", "/upload", body=upload)
    assert status == 200
    assert len(echo(body)["body"]) == len(upload)
    peak_kib = node.status()["memory"]["max_rss_kib"]
    # Streaming, not buffering: the peak (VmHWM) stays far below the 96 MiB that went through.
    assert peak_kib - baseline_kib < 32 * 1024, (baseline_kib, peak_kib, node.read_log()[-4000:])


def test_chunked_upstream_response_is_rechunked(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                service("svc", echo_upstream, routes=[{"paths": ["/"], "response_buffering": False}])
            ],
        }
    )
    status, headers, body = request(node, "GET", "/s", headers={"X-Echo-Stream": "4"})
    assert status == 200
    assert headers.get("transfer-encoding") == "chunked"
    assert [json.loads(line)["chunk"] for line in body.splitlines()] == [0, 1, 2, 3]


def test_read_timeout_is_504(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [service("svc", echo_upstream, read_timeout=300, routes=[{"paths": ["/"]}])],
        }
    )
    started = time.monotonic()
    status, _, body = request(node, "GET", "/slow", headers={"X-Echo-Delay": "2"})
    assert status == 504
    assert json.loads(body)["message"] == "The upstream server is timing out"
    assert time.monotonic() - started < 1.5


def test_unreachable_upstream_is_502_after_retries(zonegate_node_factory: Any, tmp_path: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    "name": "dead",
                    "url": f"http://127.0.0.1:{closed_port}",
                    "retries": 2,
                    "routes": [{"paths": ["/"]}],
                }
            ],
        }
    )
    status, _, body = request(node, "GET", "/")
    assert status == 502
    assert json.loads(body)["message"] == "An invalid response was received from the upstream server"


def test_upstream_closing_before_answering_is_502(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [service("svc", echo_upstream, retries=0, routes=[{"paths": ["/"]}])],
        }
    )
    status, _, body = request(node, "GET", "/", headers={"X-Echo-Close": "before-response"})
    assert status == 502
    assert json.loads(body)["message"] == "An invalid response was received from the upstream server"
    # The proxy is fine afterwards.
    assert request(node, "GET", "/")[0] == 200


def test_https_only_route_answers_426(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                service("svc", echo_upstream, routes=[{"paths": ["/secure"], "protocols": ["https"]}])
            ],
        }
    )
    status, _, body = request(node, "GET", "/secure")
    assert status == 426
    assert json.loads(body)["message"] == "Please use HTTPS protocol"


def test_expect_100_continue(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=[{"paths": ["/"]}])]}
    )
    with socket.create_connection(("127.0.0.1", node.proxy_port), timeout=10) as sock:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        ((status, body),) = read_responses(sock, 1)
    assert status == 200
    assert json.loads(body)["body"] == "hello"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n", 494),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n", 400),
    ],
)
def test_malformed_requests_get_4xx_and_close(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream, raw: bytes, expected: int
) -> None:
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=[{"paths": ["/"]}])]}
    )
    with socket.create_connection(("127.0.0.1", node.proxy_port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 %d" % expected), data[:200]
    assert request(node, "GET", "/")[0] == 200  # the worker survived


def test_reload_applies_a_good_file_and_keeps_running_on_a_bad_one(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    document = {
        "_format_version": "3.0",
        "services": [service("svc", echo_upstream, routes=[{"paths": ["/one"]}])],
    }
    node = zonegate_node_factory(document)
    first_hash = node.status()["configuration_hash"]
    assert request(node, "GET", "/two")[0] == 404
    document["services"][0]["routes"].append({"paths": ["/two"]})
    node.write_config(document)
    node.reload()
    second_hash = node.wait_for_hash_change(first_hash)
    assert request(node, "GET", "/two")[0] == 200
    node.write_config("_format_version: '3.0'\nservices:\n- host: 'bad host'\n")
    node.reload()
    time.sleep(0.5)
    assert node.status()["configuration_hash"] == second_hash
    assert request(node, "GET", "/two")[0] == 200
    assert "config.reload_rejected" in node.read_log()


def test_ready_only_with_a_config(zonegate_node_factory: Any) -> None:
    node = zonegate_node_factory(None, {"ZONEGATE_DECLARATIVE_CONFIG": ""})
    conn = http.client.HTTPConnection("127.0.0.1", node.status_port, timeout=5)
    try:
        conn.request("GET", "/status/ready")
        response = conn.getresponse()
        assert response.status == 503
        assert (
            json.loads(response.read())["message"]
            == "no configuration available (empty configuration present)"
        )
    finally:
        conn.close()
    assert node.status()["configuration_hash"] == "0" * 32


def test_bad_file_stops_start_up_with_every_error(zonegate_node_factory: Any) -> None:
    node = zonegate_node_factory(
        "_format_version: '3.0'\nservices:\n- host: 'bad host'\n  routes:\n  - paths: [nope]\n", start=False
    )
    node.start(wait=False)
    assert node.process is not None
    assert node.process.wait(timeout=30) == 1
    log = node.read_log()
    assert "services[0].host: invalid value: bad host" in log
    assert "Traceback" not in log


def test_sigterm_drains_in_flight_requests(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=[{"paths": ["/"]}])]}
    )
    conn = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=10)
    conn.request("GET", "/slow", headers={"X-Echo-Delay": "0.5"})
    time.sleep(0.1)
    assert node.process is not None
    node.process.terminate()
    response = conn.getresponse()
    assert response.status == 200
    response.read()
    conn.close()
    assert node.process.wait(timeout=15) == 0


def test_access_log_has_one_line_per_request(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [service("svc", echo_upstream, routes=[{"name": "r", "paths": ["/"]}])],
        }
    )
    _, headers, _ = request(node, "GET", "/logged")
    node.stop()
    lines = [json.loads(line) for line in (node.prefix / "access.log").read_text().splitlines()]
    assert len(lines) == 1
    entry = lines[0]
    assert entry["request_id"] == headers["x-zonegate-request-id"]
    assert entry["status"] == 200
    assert entry["route"]["name"] == "r"
    assert entry["service"]["name"] == "svc"
    assert entry["path"] == "/logged"


def test_access_log_to_dev_stdout_uses_the_stdout_the_node_has(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    # Kong's images log to /dev/stdout; the node writes to the descriptor it was given (here the
    # harness's log file) rather than reopening the path, which a non-root process may not.
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [service("svc", echo_upstream, routes=[{"name": "r", "paths": ["/"]}])],
        },
        {"ZONEGATE_PROXY_ACCESS_LOG": "/dev/stdout"},
    )
    _, headers, _ = request(node, "GET", "/to-stdout")
    node.stop()
    lines = [json.loads(line) for line in node.read_log().splitlines() if line.startswith("{")]
    assert [
        entry["path"] for entry in lines if entry.get("request_id") == headers["x-zonegate-request-id"]
    ] == ["/to-stdout"]
    assert not (node.prefix / "access.log").exists()


def test_trusted_peers_forwarded_headers_are_believed(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    document = {
        "_format_version": "3.0",
        "services": [service("svc", echo_upstream, routes=[{"paths": ["/"]}])],
    }
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "api.example.com",
        "X-Real-IP": "203.0.113.9",
    }
    untrusted = zonegate_node_factory(document)
    seen = echo(request(untrusted, "GET", "/", headers=forwarded)[2])["headers_lower"]
    assert (seen["x-forwarded-proto"], seen["x-forwarded-host"], seen["x-real-ip"]) == (
        "http",
        "127.0.0.1",
        "127.0.0.1",
    )
    trusted = zonegate_node_factory(document, {"ZONEGATE_TRUSTED_IPS": "127.0.0.0/8"})
    seen = echo(request(trusted, "GET", "/", headers=forwarded)[2])["headers_lower"]
    assert (seen["x-forwarded-proto"], seen["x-forwarded-host"], seen["x-real-ip"]) == (
        "https",
        "api.example.com",
        "203.0.113.9",
    )
