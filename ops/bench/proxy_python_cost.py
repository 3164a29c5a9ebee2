"""Python cost of one proxied request, without the kernel: what wrk cannot separate out.

Feeds a keep-alive GET through the real ``ClientConnection`` -> ``Exchange`` -> pooled
``UpstreamConnection`` and back, with in-memory transports that only record writes, and reports
microseconds per request. DESIGN.md section 7 says each extra microsecond of Python costs about
4% of throughput on loopback, so this is the number to watch when changing the hot path.
Baseline in the same run: the same bytes through bare httptools parsers with no proxy logic.

Run: ``.venv/bin/python ops/bench/proxy_python_cost.py [--requests 200000] [--routes 1,10000]``
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httptools
import uvloop

from zonegate.core import declarative
from zonegate.data_plane.client import ClientConnection
from zonegate.data_plane.runtime import build_runtime
from zonegate.data_plane.server import ProxyServer
from zonegate.data_plane.upstream import UpstreamConnection

REQUEST = b"GET /bench/hit HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class RecordingTransport:
    """Just enough of a transport for the protocols: keeps the last write, never blocks."""

    def __init__(self, peer: tuple[str, int], sock: tuple[str, int]) -> None:
        self.last = b""
        self.extra = {"peername": peer, "sockname": sock}

    def write(self, data: bytes) -> None:
        self.last = data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def is_closing(self) -> bool:
        return False


def config(routes: int) -> dict[str, Any]:
    service_routes = [{"name": "hit", "paths": ["/bench/hit"]}]
    service_routes += [
        {"name": f"r{i}", "paths": [f"/svc/{i}"], "hosts": [f"h{i % 50}.example"]} for i in range(routes - 1)
    ]
    return {
        "_format_version": "3.0",
        "services": [{"name": "s", "url": "http://127.0.0.1:18080", "routes": service_routes}],
    }


async def measure(routes: int, requests: int) -> float:
    runtime = build_runtime(declarative.load(config(routes)))
    server = ProxyServer(runtime)
    client = ClientConnection(server, "http")
    client_transport = RecordingTransport(("127.0.0.1", 40000), ("127.0.0.1", 8000))
    client.connection_made(client_transport)  # type: ignore[arg-type]
    key = ("127.0.0.1", 18080, 0, "127.0.0.1")
    upstream = UpstreamConnection(server.pool, key)
    upstream_transport = RecordingTransport(("127.0.0.1", 18080), ("127.0.0.1", 50000))
    upstream.connection_made(upstream_transport)  # type: ignore[arg-type]
    server.pool.release(upstream)
    upstream.requests = 0
    for _ in range(1000):  # warm-up and a sanity check
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)
    assert client_transport.last.startswith(b"HTTP/1.1 200 OK"), client_transport.last[:100]
    assert upstream_transport.last.startswith(b"GET / HTTP/1.1"), upstream_transport.last[:100]
    server.pool.max_requests = 1 << 62
    start = time.perf_counter()
    for _ in range(requests):
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)
    elapsed = time.perf_counter() - start
    await server.close()
    return elapsed / requests * 1e6


class _Sink:
    def on_header(self, name: bytes, value: bytes) -> None: ...

    def on_headers_complete(self) -> None: ...

    def on_body(self, body: bytes) -> None: ...

    def on_message_complete(self) -> None: ...


def baseline(requests: int) -> float:
    sink = _Sink()
    request_parser = httptools.HttpRequestParser(sink)
    response_parser = httptools.HttpResponseParser(sink)
    start = time.perf_counter()
    for _ in range(requests):
        request_parser.feed_data(REQUEST)
        response_parser.feed_data(RESPONSE)
    return (time.perf_counter() - start) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200000)
    parser.add_argument("--routes", default="1,10000")
    args = parser.parse_args()
    print(f"{'case':<36} {'us/request':>11}")
    print("-" * 48)
    print(f"{'httptools parse only (baseline)':<36} {baseline(args.requests):>11.2f}")
    for routes in (int(r) for r in args.routes.split(",")):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            cost = runner.run(measure(routes, args.requests))
        print(f"{f'zonegate exchange, {routes} routes':<36} {cost:>11.2f}")


if __name__ == "__main__":
    main()
