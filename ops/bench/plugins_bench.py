"""Plugin cost on the proxy: requests/s with no plugins, key-auth, key-auth + rate-limiting, prometheus.

Issue 6's measure: each case is one Zonegate worker (pinned to CPU 0) in front of an nginx
upstream (CPU 1, where wrk also runs), 1 route, measured in the same run, as a ratio to no plugins.
The machine is shared and drifts by tens of percent over a minute, so all the nodes are started
first (idle ones cost no CPU), each gets a short warm-up, and then each of ``--rounds`` rounds runs
wrk against every case in turn. A row reports the median over the rounds of req/s, p50 and p99,
the ratio of its median req/s to the no-plugin median, the lowest and highest ratio to no plugins
within one round, and the errors summed over the rounds.
Kong's published figures put key-auth + rate-limiting at about 0.71 of no plugins; the goal is 0.75.
Rerun: ``.venv/bin/python ops/bench/plugins_bench.py [--duration 10 --connections 50 --rounds 3]``.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from proxy_bench import (
    Target,
    add_run_arguments,
    ensure_tools,
    free_port,
    measure_rounds,
    median_table,
    rounds_line,
    start_nginx,
    start_zonegate,
    stop_all,
    upstream_conf,
    wait_port,
    warm_up,
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
    add_run_arguments(parser)
    args = parser.parse_args()
    ensure_tools()
    proxy_cpu, load_cpu = 0, 1
    with tempfile.TemporaryDirectory(prefix="zg-plugins-bench-") as tmp:
        base = Path(tmp)
        processes: list[subprocess.Popen[bytes]] = []
        try:
            upstream_port = free_port()
            processes.append(start_nginx(base / "upstream", upstream_conf(upstream_port), load_cpu))
            wait_port(upstream_port)
            targets: list[Target] = []
            for index, (name, plugins, headers) in enumerate(CASES):
                port, status_port = free_port(), free_port()
                processes.append(
                    start_zonegate(
                        base / f"zg-{index}", config(upstream_port, plugins), port, status_port, proxy_cpu
                    )
                )
                target = Target(name, f"http://127.0.0.1:{port}/bench/hit", headers)
                warm_up(target, args.connections, load_cpu)
                targets.append(target)
            results = measure_rounds(targets, args.rounds, args.duration, args.connections, load_cpu)
        finally:
            stop_all(processes)
    print(rounds_line(args.rounds, args.duration))
    for line in median_table(targets, results, CASES[0][0], "x none", 36):
        print(line)
    print(
        "goal (issue 6): key-auth + rate-limiting >= 0.75 x no plugins (Kong's published figure: about 0.71)"
    )


if __name__ == "__main__":
    main()
