"""Proxy throughput and latency with wrk, against baselines measured in the same run.

Rows: wrk straight at the upstream; nginx as a reverse proxy (1 worker, upstream keepalive);
Zonegate with 1 worker and 1 route; Zonegate with 10,000 routes (the route hit is one of
them). Every row uses the same pinning: the proxy under test on CPU 0, wrk and the upstream
(nginx returning a small 200) on CPU 1.

The machine is shared and its speed drifts by tens of percent over a minute, so the cases are
measured in interleaved rounds: every server is started first (an idle proxy costs no CPU), each
Zonegate node gets a short warm-up, then each of ``--rounds`` rounds runs wrk against every case
in turn. A row reports the median over the rounds of req/s, p50 and p99, the ratio of its median
req/s to nginx's median, the lowest and highest ratio to nginx within one round, and the errors
summed over the rounds. Then, after the rounds: Zonegate's memory at 10,000 routes, and the
latency of requests while the 10,000-route config is reloaded (SIGHUP) under load, where no
request may fail.

Needs wrk and nginx (Debian packages); the script installs them with apt-get when missing.
Run: ``.venv/bin/python ops/bench/proxy_bench.py [--duration 10] [--connections 50] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ZONEGATE = Path(sys.executable).with_name("zonegate")
NGINX_CASE = "nginx proxy, 1 worker"
WARM_UP_SECONDS = 2


@dataclass(frozen=True)
class Target:
    """One case of a table: what wrk is pointed at, with which request headers."""

    name: str
    url: str
    headers: dict[str, str] | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def ensure_tools() -> None:
    missing = [
        tool
        for tool in ("wrk", "nginx")
        if shutil.which(tool) is None and not Path("/usr/sbin/nginx").exists()
    ]
    if shutil.which("wrk") is None or (
        shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists()
    ):
        print(f"installing {missing} with apt-get ...", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk", "nginx-light"], check=True, env=env)


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(workdir: Path, body: str, cpu: int) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(body)
    process = subprocess.Popen(
        ["taskset", "-c", str(cpu), nginx_binary(), "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process


def upstream_conf(port: int) -> str:
    return f"""
worker_processes 1;
error_log logs/error.log error;
pid logs/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok"; }} }}
}}
"""


def reverse_proxy_conf(port: int, upstream_port: int) -> str:
    return f"""
worker_processes 1;
error_log logs/error.log error;
pid logs/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
  }}
}}
"""


def routes_config(upstream_port: int, routes: int) -> dict[str, Any]:
    """``routes`` routes over 100 services; the benchmark hits /bench/hit, which is one of them."""
    services: list[dict[str, Any]] = []
    per_service = max(1, routes // 100)
    made = 0
    for s in range(max(1, routes // per_service)):
        service_routes = []
        for r in range(per_service):
            if made >= routes:
                break
            service_routes.append(
                {"name": f"r{made}", "paths": [f"/svc{s}/res{r}"], "hosts": [f"h{made % 50}.example"]}
            )
            made += 1
        services.append(
            {"name": f"s{s}", "url": f"http://127.0.0.1:{upstream_port}", "routes": service_routes}
        )
    services[0]["routes"][0] = {"name": "hit", "paths": ["/bench/hit"]}
    return {"_format_version": "3.0", "services": services}


def start_zonegate(
    workdir: Path, config: dict[str, Any], port: int, status_port: int, cpu: int
) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "kong.yml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZONEGATE_")}
    env.update(
        {
            # A DB-less traditional node: the proxy alone (a data plane would need the bus).
            "ZONEGATE_ROLE": "traditional",
            "ZONEGATE_ADMIN_LISTEN": "off",
            "ZONEGATE_DATABASE": "off",
            "ZONEGATE_PREFIX": str(workdir / "prefix"),
            "ZONEGATE_DECLARATIVE_CONFIG": str(path),
            "ZONEGATE_PROXY_LISTEN": f"127.0.0.1:{port}",
            "ZONEGATE_STATUS_LISTEN": f"127.0.0.1:{status_port}",
            "ZONEGATE_PROXY_ACCESS_LOG": "off",
            "ZONEGATE_LOG_LEVEL": "warn",
            "ZONEGATE_WORKERS": "1",
        }
    )
    process = subprocess.Popen(
        ["taskset", "-c", str(cpu), str(ZONEGATE), "start"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(status_port, 60)
        wait_port(port, 60)
    except BaseException:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_all(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Stop in reverse start order: the proxies before the upstream they talk to."""
    for process in reversed(processes):
        stop(process)


def wrk(
    url: str, duration: int, connections: int, cpu: int, headers: dict[str, str] | None = None
) -> dict[str, float]:
    header_args = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    result = subprocess.run(
        [
            "taskset",
            "-c",
            str(cpu),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            *header_args,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def percentile(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.MULTILINE)
        if match is None:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(x) for x in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return {"rps": rps, "p50": percentile("50"), "p99": percentile("99"), "errors": errors}


def status_memory(status_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status", timeout=5) as response:
        return int(json.load(response)["memory"]["workers_rss_kib"])


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every wrk table shares: seconds per wrk run, connections, rounds."""
    parser.add_argument("--duration", type=positive_int, default=10, help="seconds of each wrk run")
    parser.add_argument("--connections", type=positive_int, default=50)
    parser.add_argument(
        "--rounds", type=positive_int, default=3, help="rounds over all cases; the table shows medians"
    )


def warm_up(target: Target, connections: int, cpu: int) -> None:
    wrk(target.url, WARM_UP_SECONDS, connections, cpu, target.headers)


def measure_rounds(
    targets: Sequence[Target], rounds: int, duration: int, connections: int, cpu: int
) -> list[list[dict[str, float]]]:
    """wrk against every target in turn, ``rounds`` times; one list of per-round results per target."""
    results: list[list[dict[str, float]]] = [[] for _ in targets]
    for _ in range(rounds):
        for target, runs in zip(targets, results, strict=True):
            runs.append(wrk(target.url, duration, connections, cpu, target.headers))
    return results


def median_row(runs: Sequence[dict[str, float]], baseline: Sequence[dict[str, float]]) -> dict[str, float]:
    """One case over the rounds: medians, ratio of medians, per-round ratio range, summed errors."""
    rps = statistics.median(run["rps"] for run in runs)
    ratios = [run["rps"] / base["rps"] for run, base in zip(runs, baseline, strict=True)]
    return {
        "rps": rps,
        "p50": statistics.median(run["p50"] for run in runs),
        "p99": statistics.median(run["p99"] for run in runs),
        "ratio": rps / statistics.median(base["rps"] for base in baseline),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "errors": sum(run["errors"] for run in runs),
    }


def rounds_line(rounds: int, duration: int) -> str:
    return (
        f"{rounds} round{'s' if rounds > 1 else ''} of {duration} s per case, cases interleaved "
        "in each round; medians over the rounds"
    )


def median_table(
    targets: Sequence[Target],
    results: Sequence[Sequence[dict[str, float]]],
    baseline: str,
    ratio_label: str,
    name_width: int,
) -> list[str]:
    """The table's lines; the ratios are to the case named ``baseline``."""
    names = [target.name for target in targets]
    base_runs = results[names.index(baseline)]
    header = (
        f"{'case':<{name_width}} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {ratio_label:>8} "
        f"{'per round':>11} {'errors':>7}"
    )
    lines = [header, "-" * len(header)]
    for name, runs in zip(names, results, strict=True):
        row = median_row(runs, base_runs)
        spread = f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f}"
        lines.append(
            f"{name:<{name_width}} {row['rps']:>10.0f} {row['p50']:>8.2f} {row['p99']:>8.2f} "
            f"{row['ratio']:>8.2f} {spread:>11} {row['errors']:>7.0f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--routes", type=positive_int, default=10000)
    args = parser.parse_args()
    ensure_tools()
    proxy_cpu, load_cpu = 0, 1
    extra: list[str] = []
    with tempfile.TemporaryDirectory(prefix="zg-bench-") as tmp:
        base = Path(tmp)
        processes: list[subprocess.Popen[bytes]] = []
        try:
            upstream_port = free_port()
            processes.append(start_nginx(base / "upstream", upstream_conf(upstream_port), load_cpu))
            wait_port(upstream_port)
            nginx_port = free_port()
            processes.append(
                start_nginx(base / "proxy", reverse_proxy_conf(nginx_port, upstream_port), proxy_cpu)
            )
            wait_port(nginx_port)
            targets = [
                Target("upstream direct", f"http://127.0.0.1:{upstream_port}/"),
                Target(NGINX_CASE, f"http://127.0.0.1:{nginx_port}/bench/hit"),
            ]
            zonegates: list[tuple[subprocess.Popen[bytes], int, int, Path]] = []
            for index, routes in enumerate((1, args.routes)):
                port, status_port = free_port(), free_port()
                workdir = base / f"zg-{index}"
                node = start_zonegate(
                    workdir, routes_config(upstream_port, routes), port, status_port, proxy_cpu
                )
                processes.append(node)
                target = Target(
                    f"zonegate 1 worker, {routes} route{'s' if routes > 1 else ''}",
                    f"http://127.0.0.1:{port}/bench/hit",
                )
                warm_up(target, args.connections, load_cpu)
                targets.append(target)
                zonegates.append((node, port, status_port, workdir))
            results = measure_rounds(targets, args.rounds, args.duration, args.connections, load_cpu)
            node, port, status_port, workdir = zonegates[-1]  # the one with args.routes routes
            extra.append(
                f"zonegate memory at {args.routes} routes: {status_memory(status_port) / 1024:.1f} MiB RSS"
            )
            extra.append(reload_under_load(node, port, args, load_cpu, workdir / "kong.yml", upstream_port))
        finally:
            stop_all(processes)
    print(rounds_line(args.rounds, args.duration))
    for line in median_table(targets, results, NGINX_CASE, "x nginx", 32):
        print(line)
    for line in extra:
        print(line)


def reload_under_load(
    node: subprocess.Popen[bytes],
    port: int,
    args: argparse.Namespace,
    cpu: int,
    config_path: Path,
    upstream_port: int,
) -> str:
    """wrk for the whole duration while the config is rewritten and SIGHUPed every second."""
    wrk_process = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(cpu),
            "wrk",
            "-t1",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--latency",
            f"http://127.0.0.1:{port}/bench/hit",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    reloads = 0
    deadline = time.monotonic() + args.duration - 1
    while time.monotonic() < deadline:
        time.sleep(1)
        config = routes_config(upstream_port, args.routes + reloads + 1)
        config_path.write_text(yaml.safe_dump(config))
        node.send_signal(signal.SIGHUP)
        reloads += 1
    out, _ = wrk_process.communicate()
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.MULTILINE)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return (
        f"reload under load: {reloads} reloads of a {args.routes}-route config, "
        f"p99 {p99.group(1) + p99.group(2) if p99 else '?'}, "
        f"non-2xx {errors.group(1) if errors else 0}, "
        f"socket errors: {socket_errors.group(1) if socket_errors else 'none'}"
    )


if __name__ == "__main__":
    main()
