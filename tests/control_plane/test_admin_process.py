"""The control plane and ``zonegate config db-import|db-export`` as real processes, as operators run them."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.fixtures import PostgresDatabase
from zonegate.bus.certificates import generate_cluster_certificate
from zonegate.embedded.ports import free_port
from zonegate.embedded.postgres import create_database, drop_database, run_sql

from .conftest import empty_database

ZONEGATE = Path(sys.executable).with_name("zonegate")

DOCUMENT: dict[str, Any] = {
    "_format_version": "3.0",
    "services": [
        {
            "name": "billing",
            "url": "http://billing.internal:8080/v1",
            "routes": [{"name": "pay", "paths": ["/pay"], "tags": ["team-a"]}],
            "plugins": [{"name": "rate-limiting", "config": {"minute": 5}}],
        }
    ],
    "consumers": [
        {
            "username": "ann",
            "keyauth_credentials": [{"key": "ann-key"}],
            "basicauth_credentials": [{"username": "ann-u", "password": "clear-password"}],
            "acls": [{"group": "admins"}],
        }
    ],
    "upstreams": [{"name": "pool", "targets": [{"target": "10.0.0.1:80"}, {"target": "10.0.0.2"}]}],
}
ENTITIES = 10


def environment(dsn: str, prefix: Path | None = None, **settings: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("ZONEGATE_") or k.startswith("ZONEGATE_TEST_")
    }
    env["ZONEGATE_PG_DSN"] = dsn
    env["ZONEGATE_LOG_LEVEL"] = "info"
    if prefix is not None:
        env["ZONEGATE_PREFIX"] = str(prefix)
    env.update({f"ZONEGATE_{name.upper()}": value for name, value in settings.items()})
    return env


def cluster_settings(directory: Path) -> dict[str, str]:
    """What a control plane needs for its bus: a cluster certificate, and a NATS URL (nobody there:
    these tests are about the Admin API, which never waits for the bus)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cluster.crt", directory / "cluster.key"
    if not cert.exists():
        issued = generate_cluster_certificate()
        cert.write_bytes(issued.cert_pem())
        key.write_bytes(issued.key_pem())
    return {
        "cluster_cert": str(cert),
        "cluster_cert_key": str(key),
        "cluster_nats_url": f"tls://127.0.0.1:{free_port()}",
    }


def run(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ZONEGATE), *args], env=dict(env), capture_output=True, text=True, timeout=60, check=False
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def http(
    method: str, url: str, data: bytes | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        # What ``curl -d name=x -d url=...`` sends.
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


class ControlPlane:
    def __init__(self, env: Mapping[str, str], port: int, log_path: Path) -> None:
        self.env = dict(env)
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(ZONEGATE), "start"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"zonegate exited with {self.process.returncode}:\n{self.log()}")
            try:
                if http("GET", f"{self.url}/status")[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise AssertionError(f"the control plane did not come up:\n{self.log()}")

    def stop(self) -> int:
        process = self.process
        assert process is not None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.process = None
        return process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def dsn(bootstrapped: str) -> str:
    import asyncio

    asyncio.run(empty_database(bootstrapped))
    return bootstrapped


@pytest.fixture
def control_planes() -> Iterator[list[ControlPlane]]:
    started: list[ControlPlane] = []
    try:
        yield started
    finally:
        for node in started:
            if node.process is not None:
                node.stop()


def test_control_plane_serves_curl_style_forms_on_every_listener_and_stops_cleanly(
    dsn: str, tmp_path: Path, control_planes: list[ControlPlane]
) -> None:
    prefix = tmp_path / "prefix"
    port, ssl_port = free_port(), free_port()
    env = environment(
        dsn,
        prefix,
        role="control_plane",
        admin_listen=f"0.0.0.0:{port}, 127.0.0.1:{ssl_port} ssl",
        **cluster_settings(tmp_path / "certs"),
    )
    node = ControlPlane(env, port, tmp_path / "cp.log")
    control_planes.append(node)
    node.start()

    service = http("POST", f"{node.url}/services", b"name=billing&url=http://billing.internal:8080&retries=2")
    route = http("POST", f"{node.url}/services/billing/routes", b"name=pay&paths[]=/pay&strip_path=false")
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    over_tls = http("GET", f"https://127.0.0.1:{ssl_port}/routes", context=insecure)
    root = http("GET", f"{node.url}/")
    pid = int((prefix / "zonegate.pid").read_text())
    assert node.process is not None and pid == node.process.pid

    status = node.stop()

    assert (service[0], service[1]["retries"], service[1]["port"]) == (201, 2, 8080)
    assert (route[0], route[1]["paths"], route[1]["strip_path"]) == (201, ["/pay"], False)
    assert over_tls[0] == 200 and [r["name"] for r in over_tls[1]["data"]] == ["pay"]
    assert root[1]["node_id"] == (prefix / "node_id").read_text().strip()
    assert (prefix / "ssl" / "admin-default" / "default.crt").is_file()
    assert status == 0
    assert not (prefix / "zonegate.pid").exists()
    log = node.log()
    assert "admin.exposed_without_token" in log and "node.stopped" in log
    assert "Traceback" not in log

    # A traditional node with PostgreSQL serves the same Admin API (and proxies), same node id.
    traditional_env = {
        **env,
        "ZONEGATE_ROLE": "traditional",
        "ZONEGATE_PROXY_LISTEN": f"127.0.0.1:{free_port()}",
        "ZONEGATE_STATUS_LISTEN": f"127.0.0.1:{free_port()}",
    }
    again = ControlPlane(traditional_env, port, tmp_path / "traditional.log")
    control_planes.append(again)
    again.start()
    services = http("GET", f"{again.url}/services")
    root_again = http("GET", f"{again.url}/")
    assert again.stop() == 0
    assert [s["name"] for s in services[1]["data"]] == ["billing"]
    assert root_again[1]["node_id"] == root[1]["node_id"]
    assert "config.from_cache" not in again.log() and "Traceback" not in again.log()


def test_the_control_plane_refuses_a_database_that_is_not_ready(
    postgres: PostgresDatabase, bootstrapped: str, tmp_path: Path
) -> None:
    port = free_port()
    settings = {
        "role": "control_plane",
        "admin_listen": f"127.0.0.1:{port}",
        **cluster_settings(tmp_path / "certs"),
    }
    fresh = f"zg_admin_fresh_{os.getpid()}"
    fresh_dsn = create_database(postgres.server_dsn, fresh)
    try:
        needs_bootstrap = run(environment(fresh_dsn, tmp_path / "a", **settings), "start")
    finally:
        drop_database(postgres.server_dsn, fresh)
    run_sql(bootstrapped, "UPDATE schema_meta SET executed = '{}'")
    try:
        needs_migrations = run(environment(bootstrapped, tmp_path / "b", **settings), "start")
    finally:
        run_sql(bootstrapped, "UPDATE schema_meta SET executed = ARRAY['000_base', '001_clustering']")
    unreachable = run(
        environment(f"postgresql://zonegate@127.0.0.1:{free_port()}/nope", tmp_path / "c", **settings),
        "start",
    )

    assert (
        one_error_line(needs_bootstrap)
        == "error: database needs bootstrapping; run 'zonegate migrations bootstrap'"
    )
    assert (
        one_error_line(needs_migrations)
        == "error: database needs new migrations (000_base, 001_clustering); run 'zonegate migrations up'"
    )
    assert one_error_line(unreachable).startswith("error: cannot connect to PostgreSQL at 127.0.0.1:")
    assert not (tmp_path / "b" / "zonegate.pid").exists()


def test_db_export_import_export_is_the_identity(dsn: str, tmp_path: Path) -> None:
    env = environment(dsn, tmp_path / "prefix")
    source = tmp_path / "kong.yml"
    source.write_text(yaml.safe_dump(DOCUMENT, sort_keys=False))
    first, second = tmp_path / "first.yml", tmp_path / "second.yml"

    imported = run(env, "config", "db-import", str(source))
    exported = run(env, "config", "db-export", str(first))
    reimported = run(env, "config", "db-import", str(first))
    exported_again = run(env, "config", "db-export", str(second))
    to_stdout = run(env, "config", "db_export", "-")  # Kong's spelling works too
    hashes = [run(env, "config", "hash", str(path)).stdout.strip() for path in (first, second)]

    assert imported.returncode == 0, imported.stderr
    assert f"validated {ENTITIES} entities" in imported.stdout
    assert f"imported {ENTITIES} entities" in imported.stdout
    assert "basicauth_credentials  1" in imported.stdout
    assert exported.returncode == 0 and reimported.returncode == 0 and exported_again.returncode == 0
    assert f"exported {ENTITIES} entities" in exported.stdout
    assert first.read_text() == second.read_text() == to_stdout.stdout
    assert hashes[0] == hashes[1] and len(hashes[0]) == 32
    assert f"config_hash {hashes[0]}" in exported.stdout
    assert "clear-password" not in first.read_text()


def test_db_import_writes_nothing_from_an_invalid_file(dsn: str, tmp_path: Path) -> None:
    env = environment(dsn, tmp_path / "prefix")
    good, bad = tmp_path / "good.yml", tmp_path / "bad.yml"
    good.write_text(yaml.safe_dump(DOCUMENT))
    assert run(env, "config", "db-import", str(good)).returncode == 0
    before = run(env, "config", "db-export", "-").stdout
    bad.write_text(
        yaml.safe_dump(
            {
                "_format_version": "3.0",
                "services": [
                    {"host": "x.internal", "port": 70000},
                    {"host": "y.internal", "retries": "many"},
                ],
            }
        )
    )

    infinite = tmp_path / "infinite.yml"
    infinite.write_text("_format_version: '3.0'\nplugins:\n- name: my-custom-plugin\n  config: {x: .inf}\n")

    refused = run(env, "config", "db-import", str(bad))
    unstorable = run(env, "config", "db-import", str(infinite))
    missing = run(env, "config", "db-import", str(tmp_path / "nope.yml"))
    no_database = run(
        environment(f"postgresql://zonegate@127.0.0.1:{free_port()}/nope"), "config", "db-import", str(good)
    )

    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"error: {bad}: 2 errors; nothing imported",
        "  services[0].port: value should be between 0 and 65535",
        "  services[1].retries: expected an integer",
    ]
    assert one_error_line(unstorable).endswith(": config.x: expected a finite number; nothing imported")
    assert run(env, "config", "db-export", "-").stdout == before
    assert one_error_line(missing) == f"error: {tmp_path / 'nope.yml'}: no such file"
    assert one_error_line(no_database).startswith("error: cannot connect to PostgreSQL at 127.0.0.1:")
