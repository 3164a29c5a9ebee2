"""Plugin cost on the proxy: requests/s with no plugins, key-auth, key-auth + rate-limiting, prometheus.

Issue 6's measure: each case is one Zonegate worker (pinned to CPU 0) in front of an nginx
upstream (CPU 1, where wrk also runs), 1 route, measured in the same run, as a ratio to no plugins.
Kong's published figures put key-auth + rate-limiting at about 0.71 of no plugins; the goal is 0.75.
Rerun: ``.venv/bin/python ops/bench/plugins_bench.py [--duration 10 --connections 50]``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from proxy_bench import (
    ensure_tools,
    free_port,
    start_nginx,
    start_zonegate,
    stop,
    upstream_conf,
    wait_port,
    wrk,
)

KEY = "bench-key"
HUGE = 1_000_000_000  # a limit never reached: the plugin does all its work, nobody is refused


def config(upstream_port: int, plugins: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "services": [
            {
                "name": "bench",
                "url": f"http://127.0.0.1:{upstream_port}",
                "routes": [{"name": "hit", "paths": ["/bench/hit"]}],
                "plugins": plugins,
            }
        ],
        "consumers": [{"username": "bench", "keyauth_credentials": [{"key": KEY}]}],
    }


CASES: list[tuple[str, list[dict[str, Any]], dict[str, str]]] = [
    ("no plugins", [], {}),
    ("key-auth", [{"name": "key-auth"}], {"apikey": KEY}),
    (
        "key-auth + rate-limiting (local)",
        [{"name": "key-auth"}, {"name": "rate-limiting", "config": {"second": HUGE, "minute": HUGE}}],
        {"apikey": KEY},
    ),
    (
        "prometheus (all metrics)",
        [
            {
                "name": "prometheus",
                "config": {"status_code_metrics": True, "latency_metrics": True, "bandwidth_metrics": True},
            }
        ],
        {},
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    ensure_tools()
    proxy_cpu, load_cpu = 0, 1
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="zg-plugins-bench-") as tmp:
        base = Path(tmp)
        upstream_port = free_port()
        upstream = start_nginx(base / "upstream", upstream_conf(upstream_port), load_cpu)
        try:
            wait_port(upstream_port)
            for index, (name, plugins, headers) in enumerate(CASES):
                port, status_port = free_port(), free_port()
                node = start_zonegate(
                    base / f"zg-{index}", config(upstream_port, plugins), port, status_port, proxy_cpu
                )
                try:
                    url = f"http://127.0.0.1:{port}/bench/hit"
                    wrk(url, 2, args.connections, load_cpu, headers)  # warm-up
                    rows.append((name, wrk(url, args.duration, args.connections, load_cpu, headers)))
                finally:
                    stop(node)
        finally:
            stop(upstream)
    base_rps = rows[0][1]["rps"]
    print(f"{'case':<36} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'x none':>8} {'errors':>7}")
    print("-" * 82)
    for name, row in rows:
        print(
            f"{name:<36} {row['rps']:>10.0f} {row['p50']:>8.2f} {row['p99']:>8.2f} "
            f"{row['rps'] / base_rps:>8.2f} {row['errors']:>7.0f}"
        )
    print(
        "goal (issue 6): key-auth + rate-limiting >= 0.75 x no plugins (Kong's published figure: about 0.71)"
    )


if __name__ == "__main__":
    main()
