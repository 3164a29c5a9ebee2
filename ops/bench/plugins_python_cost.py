"""Python cost of the plugins on one proxied request, without the kernel: what wrk cannot separate out.

The cases of ``plugins_bench.py`` (no plugins, key-auth, key-auth + rate-limiting with the local
policy, prometheus with all metrics; same config, same request headers) fed through the real
``ClientConnection`` -> ``Exchange`` -> pooled ``UpstreamConnection`` and back, with in-memory
transports that only record writes (``proxy_python_cost.py``). Reports microseconds per request,
the best of ``--repeat`` runs (the machine is shared: the minimum is the least disturbed), and the
ratio to the no-plugin case measured in the same run. DESIGN.md section 7: each extra microsecond
of Python costs about 4% of throughput on loopback, so the difference to ``no plugins`` is what
issue 6's wrk ratio is made of.

Run: ``.venv/bin/python ops/bench/plugins_python_cost.py [--requests 50000] [--repeat 5]``;
``--profile CASE`` (a case name, or its number from 0) prints a cProfile of that case instead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

import uvloop
from plugins_bench import CASES, config
from proxy_python_cost import RESPONSE, RecordingTransport

from zonegate.core import declarative
from zonegate.data_plane.client import ClientConnection
from zonegate.data_plane.runtime import build_runtime
from zonegate.data_plane.server import ProxyServer
from zonegate.data_plane.upstream import UpstreamConnection
from zonegate.plugins.rate_limiting import local_counters
from zonegate.plugins.registry import loaded_handlers

UPSTREAM_PORT = 18080
REQUEST_HEAD = b"GET /bench/hit HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: wrk\r\nAccept: */*\r\n"


def request_bytes(headers: dict[str, str]) -> bytes:
    extra = b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items())
    return REQUEST_HEAD + extra + b"\r\n"


async def measure(
    plugins: list[dict[str, Any]], headers: dict[str, str], requests: int, profile: cProfile.Profile | None
) -> float:
    runtime = build_runtime(
        declarative.load(config(UPSTREAM_PORT, plugins)), plugin_handlers=loaded_handlers(["bundled"])
    )
    server = ProxyServer(runtime)
    client = ClientConnection(server, "http")
    client_transport = RecordingTransport(("127.0.0.1", 40000), ("127.0.0.1", 8000))
    client.connection_made(client_transport)  # type: ignore[arg-type]
    upstream = UpstreamConnection(server.pool, ("127.0.0.1", UPSTREAM_PORT, 0, "127.0.0.1"))
    upstream_transport = RecordingTransport(("127.0.0.1", UPSTREAM_PORT), ("127.0.0.1", 50000))
    upstream.connection_made(upstream_transport)  # type: ignore[arg-type]
    server.pool.release(upstream)
    upstream.requests = 0
    request = request_bytes(headers)
    for _ in range(1000):  # warm-up and a sanity check
        client.data_received(request)
        upstream.data_received(RESPONSE)
        await asyncio.sleep(0)
    assert client_transport.last.startswith(b"HTTP/1.1 200 OK"), client_transport.last[:300]
    server.pool.max_requests = 1 << 62
    if profile is not None:
        profile.enable()
    start = time.perf_counter()
    for i in range(requests):
        client.data_received(request)
        upstream.data_received(RESPONSE)
        if i % 100 == 0:
            await asyncio.sleep(0)  # let what plugins schedule with call_soon run, as a loop would
    elapsed = time.perf_counter() - start
    if profile is not None:
        profile.disable()
    await server.close()
    return elapsed / requests * 1e6


def run_case(
    plugins: list[dict[str, Any]], headers: dict[str, str], requests: int, profile: cProfile.Profile | None
) -> float:
    local_counters.reset()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(measure(plugins, headers, requests, profile))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50000)
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; the best is reported")
    parser.add_argument("--profile", metavar="CASE", help="cProfile one case (name or index) instead")
    args = parser.parse_args()
    if args.profile is not None:
        index = int(args.profile) if args.profile.isdigit() else [c[0] for c in CASES].index(args.profile)
        name, plugins, headers = CASES[index]
        profile = cProfile.Profile()
        cost = run_case(plugins, headers, args.requests, profile)
        pstats.Stats(profile).sort_stats("tottime").print_stats(35)
        print(f"{name}: {cost:.2f} us/request (under the profiler)")
        return
    best = {name: float("inf") for name, _, _ in CASES}
    for _ in range(args.repeat):  # interleaved, so a burst of other work spreads over the cases
        for name, plugins, headers in CASES:
            best[name] = min(best[name], run_case(plugins, headers, args.requests, None))
    base = best[CASES[0][0]]
    print(f"{'case':<36} {'us/request':>11} {'+us':>7} {'x none':>8}")
    print("-" * 65)
    for name, cost in best.items():
        print(f"{name:<36} {cost:>11.2f} {cost - base:>7.2f} {cost / base:>8.2f}")


if __name__ == "__main__":
    main()
