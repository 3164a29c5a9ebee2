"""Proxy throughput and latency with wrk, against baselines measured in the same run.

Rows: wrk straight at the upstream; nginx as a reverse proxy (1 worker, upstream keepalive);
Zonegate with 1 worker and 1 route; Zonegate with 10,000 routes (the route hit is one of
them). Every row uses the same pinning: the proxy under test on CPU 0, wrk and the upstream
(nginx returning a small 200) on CPU 1. Then: Zonegate's memory at 10,000 routes, and the
latency of requests while the 10,000-route config is reloaded (SIGHUP) under load, where no
request may fail.

Needs wrk and nginx (Debian packages); the script installs them with apt-get when missing.
Run: ``.venv/bin/python ops/bench/proxy_bench.py [--duration 10] [--connections 50]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ZONEGATE = Path(sys.executable).with_name("zonegate")


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
    services = []
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
    wait_port(status_port, 60)
    wait_port(port, 60)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--routes", type=int, default=10000)
    args = parser.parse_args()
    ensure_tools()
    proxy_cpu, load_cpu = 0, 1
    rows: list[tuple[str, dict[str, float]]] = []
    extra: list[str] = []
    with tempfile.TemporaryDirectory(prefix="zg-bench-") as tmp:
        base = Path(tmp)
        upstream_port = free_port()
        upstream = start_nginx(base / "upstream", upstream_conf(upstream_port), load_cpu)
        processes: list[subprocess.Popen[bytes]] = [upstream]
        try:
            wait_port(upstream_port)
            rows.append(
                (
                    "upstream direct",
                    wrk(f"http://127.0.0.1:{upstream_port}/", args.duration, args.connections, load_cpu),
                )
            )

            nginx_port = free_port()
            proxy = start_nginx(base / "proxy", reverse_proxy_conf(nginx_port, upstream_port), proxy_cpu)
            wait_port(nginx_port)
            rows.append(
                (
                    "nginx proxy, 1 worker",
                    wrk(
                        f"http://127.0.0.1:{nginx_port}/bench/hit", args.duration, args.connections, load_cpu
                    ),
                )
            )
            stop(proxy)

            for routes in (1, args.routes):
                port, status_port = free_port(), free_port()
                node = start_zonegate(
                    base / f"zg-{routes}", routes_config(upstream_port, routes), port, status_port, proxy_cpu
                )
                processes.append(node)
                wrk(f"http://127.0.0.1:{port}/bench/hit", 2, args.connections, load_cpu)  # warm-up
                rows.append(
                    (
                        f"zonegate 1 worker, {routes} route{'s' if routes > 1 else ''}",
                        wrk(f"http://127.0.0.1:{port}/bench/hit", args.duration, args.connections, load_cpu),
                    )
                )
                if routes == args.routes:
                    extra.append(
                        f"zonegate memory at {routes} routes: {status_memory(status_port) / 1024:.1f} MiB RSS"
                    )
                    extra.append(
                        reload_under_load(
                            node, port, args, load_cpu, base / f"zg-{routes}" / "kong.yml", upstream_port
                        )
                    )
                stop(node)
                processes.remove(node)
        finally:
            for process in processes:
                stop(process)
    nginx_rps = rows[1][1]["rps"]
    print(f"{'case':<32} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'x nginx':>8} {'errors':>7}")
    print("-" * 78)
    for name, row in rows:
        ratio = row["rps"] / nginx_rps
        print(
            f"{name:<32} {row['rps']:>10.0f} {row['p50']:>8.2f} {row['p99']:>8.2f} "
            f"{ratio:>8.2f} {row['errors']:>7.0f}"
        )
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
