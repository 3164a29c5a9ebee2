"""A hybrid-mode cluster made of real processes: TLS nats-server, PostgreSQL, CPs and DPs.

``HybridCluster`` generates the shared cluster certificate (the same code as ``zonegate hybrid
gen-cert``), runs a nats-server that requires and verifies client certificates, bootstraps a
database, and starts ``zonegate start`` processes as control planes (Admin API on a free port)
and data planes (proxy and Status API on free ports). Everything it starts, it stops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.fixtures import PostgresDatabase
from harness.zonegate_node import ZonegateNode, make_node
from zonegate.bus.certificates import generate_cluster_certificate
from zonegate.embedded.nats_server import NatsServer, NatsServerTls
from zonegate.embedded.ports import free_port
from zonegate.embedded.postgres import create_database, drop_database

ZONEGATE = Path(sys.executable).with_name("zonegate")


def clean_environment() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith("ZONEGATE_") or k.startswith("ZONEGATE_TEST_")
    }


def http(
    method: str, url: str, body: Any = None, *, headers: Mapping[str, str] | None = None, timeout: float = 5
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            try:
                return response.status, json.loads(raw) if raw else None
            except ValueError:
                return response.status, raw.decode(errors="replace")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else None
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class ControlPlaneProcess:
    env: dict[str, str]
    admin_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, timeout: float = 30) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(ZONEGATE), "start"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"control plane exited with {self.process.returncode}:\n{self.read_log()}"
                )
            return http("GET", f"{self.admin_url}/status", timeout=1)[0] == 200

        wait_for(up, timeout, "the control plane's Admin API")

    def stop(self, timeout: float = 20) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return http(method, f"{self.admin_url}{path}", body)


@dataclass
class HybridCluster:
    base: Path
    dsn: str
    nats: NatsServer = field(init=False)
    cert: Path = field(init=False)
    key: Path = field(init=False)
    control_planes: list[ControlPlaneProcess] = field(default_factory=list)
    data_planes: list[ZonegateNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        certs = self.base / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = certs / "cluster.crt", certs / "cluster.key"
        if not self.cert.exists():
            issued = generate_cluster_certificate()
            self.cert.write_bytes(issued.cert_pem())
            self.key.write_bytes(issued.key_pem())
            self.key.chmod(0o600)
        self.nats = NatsServer(
            self.base / "nats", tls=NatsServerTls(cert_file=self.cert, key_file=self.key, ca_file=self.cert)
        )

    def cluster_env(self) -> dict[str, str]:
        env = {
            "ZONEGATE_CLUSTER_CERT": str(self.cert),
            "ZONEGATE_CLUSTER_CERT_KEY": str(self.key),
            "ZONEGATE_CLUSTER_HEARTBEAT_INTERVAL": "1",
            "ZONEGATE_CLUSTER_WATCHDOG_INTERVAL": "2",
            "ZONEGATE_LOG_LEVEL": "info",
        }
        if self.nats.running:  # tests with servers of their own pass cluster_nats_url instead
            env["ZONEGATE_CLUSTER_NATS_URL"] = self.nats.url
        return env

    def bootstrap(self) -> None:
        env = clean_environment() | {"ZONEGATE_PG_DSN": self.dsn}
        result = subprocess.run(
            [str(ZONEGATE), "migrations", "bootstrap"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr

    def start_nats(self) -> None:
        self.nats.start()

    def add_control_plane(self, *, start: bool = True, **settings: str) -> ControlPlaneProcess:
        index = len(self.control_planes) + 1
        prefix = self.base / f"cp-{index}"
        prefix.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = clean_environment() | self.cluster_env()
        env |= {
            "ZONEGATE_ROLE": "control_plane",
            "ZONEGATE_PG_DSN": self.dsn,
            "ZONEGATE_PREFIX": str(prefix),
            "ZONEGATE_ADMIN_LISTEN": f"127.0.0.1:{port}",
        }
        env |= {f"ZONEGATE_{name.upper()}": value for name, value in settings.items()}
        cp = ControlPlaneProcess(env, port, prefix / "cp.log")
        self.control_planes.append(cp)
        if start:
            cp.start()
        return cp

    def add_data_plane(self, *, start: bool = True, labels: str = "", **settings: str) -> ZonegateNode:
        index = len(self.data_planes) + 1
        env = self.cluster_env() | {"ZONEGATE_ROLE": "data_plane", "ZONEGATE_DECLARATIVE_CONFIG": ""}
        if labels:
            env["ZONEGATE_CLUSTER_DP_LABELS"] = labels
        env |= {f"ZONEGATE_{name.upper()}": value for name, value in settings.items()}
        node = make_node(self.base / f"dp-{index}", env)
        self.data_planes.append(node)
        if start:
            node.start()
        return node

    def stop(self) -> None:
        for node in self.data_planes:
            node.stop()
        for cp in self.control_planes:
            cp.stop()
        self.nats.stop()


@pytest.fixture
def cluster(
    tmp_path: Path, postgres: PostgresDatabase, request: pytest.FixtureRequest
) -> Iterator[HybridCluster]:
    """A bootstrapped database of its own, a started TLS nats-server; add CPs and DPs as needed."""
    name = f"{postgres.name}_{abs(hash(request.node.name)) % 10**8}"
    dsn = create_database(postgres.server_dsn, name)
    hybrid = HybridCluster(tmp_path, dsn)
    try:
        hybrid.bootstrap()
        hybrid.start_nats()
        yield hybrid
    finally:
        hybrid.stop()
        drop_database(postgres.server_dsn, name)
