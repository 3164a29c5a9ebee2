"""How long one routing decision takes as the number of routes grows.

The router runs once per request on the proxy's hot path (DESIGN section 7: about 1 us at
10,000 routes, a linear scan or one big alternation regex is not acceptable). Baseline,
measured in the same run: one plain ``dict.get`` on the request path, which no router can beat,
and the same routes matched by a naive linear scan (host set + prefix only), which a router
must beat.

Two router columns: ``cold`` has the decision cache off (every request computed, as for a
stream of unique paths), ``cached`` has Kong's cache of whole decisions on and the same 200
requests cycled, as for hot URLs.

Routes: a mix of host-bound prefix routes, host-less prefix routes of varied lengths,
wildcard-host routes, method-bound routes, a few header routes and a few regex routes with
named captures (about 1 in 200). Requests: hits on each kind, and misses (unknown host and
path; known host, unknown path).

Run: ``.venv/bin/python ops/bench/router_bench.py [--sizes 1,1000,10000]``
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

from zonegate.core import declarative
from zonegate.data_plane.router import Router, compile_router


def build_document(size: int) -> dict[str, Any]:
    rng = random.Random(size)
    services: list[dict[str, Any]] = []
    per_service = 10
    for s in range((size + per_service - 1) // per_service):
        routes: list[dict[str, Any]] = []
        for r in range(min(per_service, size - s * per_service)):
            n = s * per_service + r
            kind = n % 10
            route: dict[str, Any] = {"name": f"r{n}"}
            if n % 200 == 199:
                route["paths"] = [f"~/regex/{n}/(?<id>\\d+)/items$"]
                route["regex_priority"] = rng.randint(0, 3)
            elif kind < 4:
                route["hosts"] = [f"api{n}.example.com"]
                route["paths"] = [f"/v{n % 3}/svc"]
            elif kind < 7:
                route["paths"] = [f"/{'p' * (n % 5)}api/{n}/" + "x" * (n % 7)]
            elif kind == 7:
                route["hosts"] = [f"*.tenant{n}.example.net"]
            elif kind == 8:
                route["methods"] = ["GET", "POST"]
                route["paths"] = [f"/m/{n}"]
            else:
                route["headers"] = {"x-version": [f"v{n}"]}
                route["paths"] = [f"/h/{n}"]
            routes.append(route)
        services.append(
            {"name": f"s{s}", "url": f"http://backend{s % 20}.internal:8080/base", "routes": routes}
        )
    return {"_format_version": "3.0", "services": services}


Request = tuple[str, str, str | None, str, dict[str, str] | None]


def requests_for(size: int) -> dict[str, list[Request]]:
    rng = random.Random(7)
    picks = [rng.randrange(size) for _ in range(200)]

    def hit(n: int) -> Request:
        kind = n % 10
        if n % 200 == 199:
            return ("GET", "http", "any.example.org", f"/regex/{n}/42/items", None)
        if kind < 4:
            return ("GET", "http", f"api{n}.example.com", f"/v{n % 3}/svc/users/1", None)
        if kind < 7:
            return (
                "GET",
                "http",
                "any.example.org",
                f"/{'p' * (n % 5)}api/{n}/" + "x" * (n % 7) + "/a",
                None,
            )
        if kind == 7:
            return ("GET", "http", f"a.tenant{n}.example.net", "/anything", None)
        if kind == 8:
            return ("POST", "http", "any.example.org", f"/m/{n}/z", None)
        return ("GET", "http", "any.example.org", f"/h/{n}", {"x-version": f"v{n}"})

    regex_ids = [n for n in range(size) if n % 200 == 199]
    return {
        "hit: mixed": [hit(n) for n in picks],
        "hit: regex route": [hit(n) for n in regex_ids[:50]] or [hit(0)],
        "miss: unknown host+path": [
            ("GET", "http", f"nope{i}.example.org", f"/nothing/{i}", None) for i in range(200)
        ],
        "miss: known host, bad path": [
            ("GET", "http", f"api{n - n % 10}.example.com", f"/zz/{n}", None) for n in picks
        ],
    }


def per_call_ns(fn: Callable[[], object], calls: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def bench_router(router: Router, requests: list[Request], repeats: int) -> float:
    match = router.match

    # One call per request in the batch; the batch is cycled so every kind is measured.
    def run() -> None:
        for method, scheme, host, path, headers in requests:
            match(method, scheme, host, path, headers)

    return per_call_ns(run, 20, repeats) / len(requests)


def bench_dict(requests: list[Request], repeats: int) -> float:
    table = {path: True for _, _, _, path, _ in requests[::2]}
    get = table.get

    def run() -> None:
        for _method, _scheme, _host, path, _headers in requests:
            get(path)

    return per_call_ns(run, 20, repeats) / len(requests)


def linear_scan(router_routes: list[tuple[Any, Any]], requests: list[Request]) -> Callable[[], None]:
    """Priority-ordered list of (host set, prefix) checked one by one: what an index must beat."""

    def run() -> None:
        for _method, _scheme, host, path, _headers in requests:
            for hosts, prefix in router_routes:
                if (hosts is None or host in hosts) and (prefix is None or path.startswith(prefix)):
                    break

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1,1000,10000")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    header = (
        f"{'routes':>7} {'compile ms':>10} {'request kind':<27} {'cold ns':>8} {'cached ns':>9} "
        f"{'dict.get ns':>11} {'cold/dict':>9} {'linear ns':>10}"
    )
    print(header)
    print("-" * len(header))
    for size in (int(s) for s in args.sizes.split(",")):
        config = declarative.load(build_document(size))
        start = time.perf_counter()
        cold = compile_router(config, cache_size=0)
        compile_ms = (time.perf_counter() - start) * 1000
        cached = compile_router(config)
        flat = [
            (frozenset(r["hosts"]) if r["hosts"] else None, r["paths"][0] if r["paths"] else None)
            for r in config.of("routes")
        ]
        for kind, requests in requests_for(size).items():
            cold_ns = bench_router(cold, requests, args.repeats)
            cached_ns = bench_router(cached, requests, args.repeats)
            dict_ns = bench_dict(requests, args.repeats)
            linear_ns = per_call_ns(linear_scan(flat, requests), 1, 1) / len(requests)
            print(
                f"{size:>7} {compile_ms:>10.1f} {kind:<27} {cold_ns:>8.0f} {cached_ns:>9.0f} "
                f"{dict_ns:>11.0f} {cold_ns / dict_ns:>9.1f} {linear_ns:>10.0f}"
            )


if __name__ == "__main__":
    main()
