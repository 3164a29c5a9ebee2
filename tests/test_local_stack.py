"""``zonegate up`` as a real process: the whole hybrid stack comes up, proxies, and goes away on Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest

from harness.fixtures import PostgresDatabase
from zonegate.embedded import free_port
from zonegate.local_stack import StackPorts

ZONEGATE = Path(sys.executable).with_name("zonegate")
READY_LINE = "Press Ctrl-C to stop."

pytestmark = pytest.mark.slow


@pytest.fixture
def prefix() -> Iterator[Path]:
    # As root, PostgreSQL runs as another user who must be able to traverse to its data dir.
    base = Path(tempfile.mkdtemp(prefix="zonegate-up-"))
    os.chmod(base, 0o711)
    yield base / "state"
    shutil.rmtree(base, ignore_errors=True)


def free_ports() -> StackPorts:
    return StackPorts(**{spec.name: free_port() for spec in fields(StackPorts)})


def port_arguments(ports: StackPorts) -> list[str]:
    return [argument for name, port in ports.items() for argument in (StackPorts.option(name), str(port))]


@dataclass
class Up:
    process: subprocess.Popen[str]
    lines: list[str]

    def stop(self) -> tuple[int, str, str]:
        self.process.send_signal(signal.SIGINT)
        out, err = self.process.communicate(timeout=60)
        return self.process.returncode, out, err


def start_up(prefix: Path, ports: StackPorts, env: dict[str, str] | None = None) -> Up:
    process = subprocess.Popen(
        [str(ZONEGATE), "up", "--prefix", str(prefix), *port_arguments(ports)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.strip() == READY_LINE:
            return Up(process, lines)
    process.kill()
    _, err = process.communicate(timeout=10)
    raise AssertionError(f"zonegate up never became ready: {lines}\n{err}")


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children of children too), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_is_free(port: int) -> bool:
    """Nothing listens any more (connections we made may linger in TIME_WAIT; that is not a listener)."""
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_up_runs_the_hybrid_stack_and_stops_cleanly(prefix: Path) -> None:
    ports = free_ports()
    up = start_up(prefix, ports)
    children: set[int] = set()
    try:
        children = descendants(up.process.pid)
        # PostgreSQL, nats-server, a CP, two DPs (each with its worker): all below zonegate up.
        assert len(children) >= 5, children
        assert "sample config loaded" in "\n".join(up.lines)

        for zone in ("a", "b"):
            proxy = f"http://127.0.0.1:{ports.proxy(zone)}/demo"
            status, body = get(proxy)
            assert status == 401, body
            assert body["message"] == "No API key found in request"
            status, body = get(proxy, {"apikey": "demo-key"})
            assert status == 200, body
            assert body["headers"]["X-Consumer-Username"] == "demo-user"

        status, body = get(f"http://127.0.0.1:{ports.admin}/clustering/data-planes")
        assert status == 200
        rows = {row["labels"]["zone"]: row for row in body["data"]}
        assert set(rows) == {"a", "b"}
        assert {row["sync_status"] for row in rows.values()} == {"normal"}
        assert rows["a"]["config_hash"] == rows["b"]["config_hash"]

        # A change through the Admin API: kept in PostgreSQL across a restart (no re-seeding).
        status, _ = get(f"http://127.0.0.1:{ports.admin}/consumers/demo-user")
        assert status == 200
        request = urllib.request.Request(
            f"http://127.0.0.1:{ports.admin}/consumers/demo-user/key-auth",
            data=json.dumps({"key": "second-key"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201

        # A second ``zonegate up`` on the same state is refused with one line.
        second = subprocess.run(
            [str(ZONEGATE), "up", "--prefix", str(prefix), *port_arguments(free_ports())],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert second.stderr.strip() == f"error: another 'zonegate up' is running with its state in {prefix}"
    finally:
        code, out, err = up.stop()
    assert code == 0, err
    assert out.strip().endswith("stopped")
    assert [pid for pid in children if alive(pid)] == []
    assert [port for _, port in ports.items() if not port_is_free(port)] == []

    cert_before = (prefix / "cluster.crt").read_bytes()
    up = start_up(prefix, ports)
    try:
        assert (prefix / "cluster.crt").read_bytes() == cert_before
        assert "kept the database's config" in "\n".join(up.lines)
        deadline = time.monotonic() + 30
        while True:  # the DP serves its LMDB cache at once, then the CP's snapshot (same config)
            status, body = get(f"http://127.0.0.1:{ports.proxy_a}/demo", {"apikey": "second-key"})
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 200, body
    finally:
        code, _, err = up.stop()
    assert code == 0, err


def test_up_uses_the_database_zonegate_pg_settings_name(prefix: Path, postgres: PostgresDatabase) -> None:
    ports = free_ports()
    up = start_up(prefix, ports, env={**os.environ, "ZONEGATE_PG_DSN": postgres.dsn})
    try:
        assert not (prefix / "postgres").exists()  # no embedded PostgreSQL
        status, body = get(f"http://127.0.0.1:{ports.admin}/services/demo-service")
        assert status == 200, body
        status, _ = get(f"http://127.0.0.1:{ports.proxy_a}/demo", {"apikey": "demo-key"})
        assert status == 200
    finally:
        code, _, err = up.stop()
    assert code == 0, err
    assert port_is_free(ports.pg) and port_is_free(ports.admin)


def test_up_with_a_taken_port_is_one_clear_line(prefix: Path) -> None:
    ports = free_ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports.proxy_b))
        taken.listen()
        result = subprocess.run(
            [str(ZONEGATE), "up", "--prefix", str(prefix), *port_arguments(ports)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: port {ports.proxy_b} for proxy-b is already in use on 127.0.0.1 "
        "(choose another with --proxy-b-port)"
    )
    assert not (prefix / "postgres").exists()  # nothing was started


def test_up_with_a_bad_setting_is_one_clear_line(prefix: Path) -> None:
    result = subprocess.run(
        [str(ZONEGATE), "up", "--prefix", str(prefix)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "ZONEGATE_ROLE": "gateway"},
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: invalid ZONEGATE_ROLE: 'gateway'")
    assert len(result.stderr.strip().splitlines()) == 1
