"""The echo upstream is a real HTTP/1.1 server, and each steering header does what it says."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from typing import Any

import aiohttp
import pytest

from harness import EchoUpstream, EchoUpstreamFactory, filler, wait_for_port
from zonegate.embedded.ports import port_accepts


def _request(
    upstream: EchoUpstream,
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection(upstream.host, upstream.port, timeout=5)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers or []:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def _raw_exchange(upstream: EchoUpstream, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection((upstream.host, upstream.port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def _decode_chunked(data: bytes) -> list[bytes]:
    chunks: list[bytes] = []
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return chunks
        chunks.append(data[:size])
        assert data[size : size + 2] == b"\r\n"
        data = data[size + 2 :]


def test_echoes_method_path_query_headers_and_version(echo_upstream: EchoUpstream) -> None:
    assert echo_upstream.url == f"http://127.0.0.1:{echo_upstream.port}"
    response, body = _request(
        echo_upstream, "GET", "/a/b?x=1&y=%20z", [("X-Custom", "One"), ("X-Custom", "Two")]
    )
    echo: dict[str, Any] = json.loads(body)
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert echo["method"] == "GET"
    assert echo["path"] == "/a/b"
    assert echo["query"] == "x=1&y=%20z"
    assert echo["http_version"] == "1.1"
    assert ["X-Custom", "One"] in echo["headers"] and ["X-Custom", "Two"] in echo["headers"]
    assert echo["headers_lower"]["x-custom"] == "One, Two"
    assert echo["headers_lower"]["host"] == f"127.0.0.1:{echo_upstream.port}"
    assert echo["body"] == ""
    assert echo["upstream"] == "echo"
    assert echo_upstream.connections_accepted == 1
    assert echo_upstream.requests_served == 1
    assert echo_upstream.requests[0].header("x-custom") == "One"


def test_content_length_body_is_echoed(echo_upstream: EchoUpstream) -> None:
    _, body = _request(echo_upstream, "POST", "/submit", [("Content-Type", "text/plain")], b"hello \xc3\xa9")
    echo = json.loads(body)
    assert echo["method"] == "POST"
    assert echo["body"] == "hello \u00e9"


def test_binary_body_is_echoed_as_base64(echo_upstream: EchoUpstream) -> None:
    payload = bytes(range(256))
    _, body = _request(echo_upstream, "PUT", "/bin", body=payload)
    echo = json.loads(body)
    assert echo["body"] is None
    assert base64.b64decode(echo["body_base64"]) == payload


def test_chunked_request_body_is_echoed(echo_upstream: EchoUpstream) -> None:
    raw = (
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    head, _, body = _raw_exchange(echo_upstream, raw).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    echo = json.loads(body)
    assert echo["body"] == "hello world!"
    assert ["Transfer-Encoding", "chunked"] in echo["headers"]


def test_status_header_sets_the_status(echo_upstream: EchoUpstream) -> None:
    response, body = _request(echo_upstream, headers=[("X-Echo-Status", "503")])
    assert response.status == 503
    assert response.reason == "Service Unavailable"
    assert json.loads(body)["path"] == "/"


def test_delay_header_delays_the_answer(echo_upstream: EchoUpstream) -> None:
    started = time.monotonic()
    response, _ = _request(echo_upstream, headers=[("X-Echo-Delay", "0.3")])
    elapsed = time.monotonic() - started
    assert response.status == 200
    assert elapsed >= 0.3


def test_stream_header_answers_in_chunks_with_delays(echo_upstream: EchoUpstream) -> None:
    request = (
        b"GET /stream HTTP/1.1\r\nHost: x\r\nX-Echo-Stream: 4\r\nX-Echo-Chunk-Delay: 0.05\r\n"
        b"Connection: close\r\n\r\n"
    )
    with socket.create_connection((echo_upstream.host, echo_upstream.port), timeout=5) as sock:
        sock.sendall(request)
        arrivals: list[float] = []
        data = b""
        while chunk := sock.recv(65536):
            arrivals.append(time.monotonic())
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert b"Content-Length" not in head
    chunks = _decode_chunked(body)
    assert [json.loads(chunk) for chunk in chunks] == [{"chunk": i, "total": 4} for i in range(4)]
    # Three gaps of 50 ms between four chunks: the pieces really arrive over time, not in one write.
    assert arrivals[-1] - arrivals[0] >= 0.14


def test_stream_with_body_size_splits_the_filler(echo_upstream: EchoUpstream) -> None:
    response, body = _request(echo_upstream, headers=[("X-Echo-Stream", "3"), ("X-Echo-Body-Size", "1000")])
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert body == filler(1000)


def test_close_before_response(echo_upstream: EchoUpstream) -> None:
    with pytest.raises(http.client.RemoteDisconnected):
        _request(echo_upstream, headers=[("X-Echo-Close", "before-response")])
    assert echo_upstream.requests_received == 1
    assert echo_upstream.requests_served == 0


def test_close_after_headers(echo_upstream: EchoUpstream) -> None:
    with pytest.raises(http.client.IncompleteRead) as failure:
        _request(echo_upstream, headers=[("X-Echo-Close", "after-headers")])
    assert failure.value.partial == b""
    assert failure.value.expected is not None and failure.value.expected > 0


def test_close_mid_body(echo_upstream: EchoUpstream) -> None:
    with pytest.raises(http.client.IncompleteRead) as failure:
        _request(echo_upstream, headers=[("X-Echo-Close", "mid-body"), ("X-Echo-Body-Size", "1000")])
    assert failure.value.partial == filler(1000)[:500]
    assert echo_upstream.requests_served == 0


def test_close_mid_body_while_streaming(echo_upstream: EchoUpstream) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Echo-Stream: 4\r\nX-Echo-Close: mid-body\r\n\r\n"
    data = _raw_exchange(echo_upstream, raw)
    assert b"Transfer-Encoding: chunked" in data
    assert b'"chunk": 1' in data and b'"chunk": 2' not in data
    assert not data.endswith(b"0\r\n\r\n")


def test_close_reset_sends_rst(echo_upstream: EchoUpstream) -> None:
    with pytest.raises(ConnectionResetError):
        _raw_exchange(echo_upstream, b"GET / HTTP/1.1\r\nHost: x\r\nX-Echo-Close: reset\r\n\r\n")


def test_response_headers_are_added(echo_upstream: EchoUpstream) -> None:
    response, _ = _request(
        echo_upstream,
        headers=[
            ("X-Echo-Response-Header", "X-One: 1"),
            ("X-Echo-Response-Header", "Set-Cookie: a=b; Path=/"),
        ],
    )
    assert response.getheader("X-One") == "1"
    assert response.getheader("Set-Cookie") == "a=b; Path=/"


def test_body_size_returns_filler_with_content_length(echo_upstream: EchoUpstream) -> None:
    response, body = _request(echo_upstream, headers=[("X-Echo-Body-Size", "100000")])
    assert response.getheader("Content-Length") == "100000"
    assert body == filler(100000)


def test_head_request_has_no_body(echo_upstream: EchoUpstream) -> None:
    raw = b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    head, _, body = _raw_exchange(echo_upstream, raw).partition(b"\r\n\r\n")
    assert b"Content-Length: " in head
    assert body == b""


def test_keep_alive_serves_two_requests_on_one_connection(echo_upstream: EchoUpstream) -> None:
    connection = http.client.HTTPConnection(echo_upstream.host, echo_upstream.port, timeout=5)
    try:
        connection.request("GET", "/first")
        first = connection.getresponse()
        first_echo = json.loads(first.read())
        connection.request("POST", "/second", body=b"two")
        second = connection.getresponse()
        second_echo = json.loads(second.read())
    finally:
        connection.close()
    assert first.getheader("Connection") == "keep-alive"
    assert first_echo["connection"] == second_echo["connection"]
    assert (first_echo["request_on_connection"], second_echo["request_on_connection"]) == (1, 2)
    assert second_echo["body"] == "two"
    assert echo_upstream.connections_accepted == 1
    assert echo_upstream.requests_served == 2


def test_connection_close_is_honoured(echo_upstream: EchoUpstream) -> None:
    data = _raw_exchange(echo_upstream, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"Connection: close" in data.partition(b"\r\n\r\n")[0]


def test_http_1_0_without_keep_alive_closes(echo_upstream: EchoUpstream) -> None:
    head, _, body = _raw_exchange(echo_upstream, b"GET /old HTTP/1.0\r\n\r\n").partition(b"\r\n\r\n")
    assert b"Connection: close" in head
    assert json.loads(body)["http_version"] == "1.0"


async def test_usable_from_an_async_test(echo_upstream: EchoUpstream) -> None:
    # The upstream has its own loop in its own thread: this test's loop only runs the client.
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{echo_upstream.url}/async?q=1", data=b"from aiohttp") as response,
    ):
        echo = await response.json()
    assert echo["path"] == "/async" and echo["query"] == "q=1" and echo["body"] == "from aiohttp"


def test_factory_starts_independent_upstreams(echo_upstream_factory: EchoUpstreamFactory) -> None:
    first, second = echo_upstream_factory("a"), echo_upstream_factory("b")
    assert first.port != second.port
    assert json.loads(_request(first)[1])["upstream"] == "a"
    response, body = _request(second)
    assert response.getheader("X-Echo-Upstream") == "b" and json.loads(body)["upstream"] == "b"
    assert (first.requests_served, second.requests_served) == (1, 1)


def test_stop_closes_listener_and_open_connections() -> None:
    upstream = EchoUpstream("short-lived")
    upstream.start()
    port = upstream.port
    # An idle keep-alive connection is open when we stop: stop() must close it, not wait for the client.
    idle = socket.create_connection((upstream.host, port), timeout=5)
    try:
        wait_for_port(upstream.host, port, timeout=2)
        deadline = time.monotonic() + 2
        while upstream.open_connections < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        upstream.stop()
        assert idle.recv(1) == b""  # EOF: the server side closed it
    finally:
        idle.close()
    assert not upstream.running
    assert not port_accepts(upstream.host, port)
    # A restart keeps the port (health-check recovery tests need that).
    upstream.start()
    try:
        assert upstream.port == port and port_accepts(upstream.host, port)
    finally:
        upstream.stop()


def test_malformed_request_gets_400(echo_upstream: EchoUpstream) -> None:
    data = _raw_exchange(echo_upstream, b"NONSENSE\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 ")


def test_stop_during_a_slow_response_is_prompt() -> None:
    upstream = EchoUpstream("slow")
    upstream.start()
    with socket.create_connection((upstream.host, upstream.port), timeout=5) as sock:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Echo-Delay: 30\r\n\r\n")
            deadline = time.monotonic() + 2
            while upstream.requests_received < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            started = time.monotonic()
            upstream.stop()
            assert time.monotonic() - started < 2
        finally:
            upstream.stop()
        assert sock.recv(1) == b""
    assert upstream.requests_served == 0
