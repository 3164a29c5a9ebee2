"""``zonegate up`` as a real process: mTLS NATS and PostgreSQL come up, work, and go away on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from zonegate.embedded import client_ssl_context, free_port

ZONEGATE = Path(sys.executable).with_name("zonegate")
READY_LINE = "Press Ctrl-C to stop."


@pytest.fixture
def prefix() -> Iterator[Path]:
    # As root, PostgreSQL runs as another user who must be able to traverse to its data dir.
    base = Path(tempfile.mkdtemp(prefix="zonegate-up-"))
    os.chmod(base, 0o711)
    yield base / "state"
    shutil.rmtree(base, ignore_errors=True)


def start_up(prefix: Path, nats_port: int, pg_port: int) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [
            str(ZONEGATE),
            "up",
            "--prefix",
            str(prefix),
            "--nats-port",
            str(nats_port),
            "--pg-port",
            str(pg_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.strip() == READY_LINE:
            return process, lines
    process.kill()
    _, err = process.communicate(timeout=10)
    raise AssertionError(f"zonegate up never became ready: {lines}\n{err}")


def stop_up(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    return process.returncode, out, err


def port_is_free(port: int) -> bool:
    """Nothing listens any more (connections we made may linger in TIME_WAIT; that is not a listener)."""
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def nats_round_trip(url: str, prefix: Path) -> bytes:
    tls = prefix / "tls"
    context = client_ssl_context(tls / "ca.crt", tls / "client-data-plane.crt", tls / "client-data-plane.key")
    client = await nats.connect(url, tls=context, allow_reconnect=False, connect_timeout=5)
    try:
        subscription = await client.subscribe("zg.test")
        await client.publish("zg.test", b"hello over mTLS")
        message = await subscription.next_msg(timeout=5)
        return message.data
    finally:
        await client.close()


async def postgres_answer(dsn: str) -> int:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return int(await connection.fetchval("SELECT 40 + 2"))
    finally:
        await connection.close()


def test_up_serves_mtls_nats_and_postgres_then_stops_cleanly(prefix: Path) -> None:
    nats_port, pg_port = free_port(), free_port()
    process, lines = start_up(prefix, nats_port, pg_port)
    try:
        assert f"tls://127.0.0.1:{nats_port}" in "\n".join(lines)
        assert asyncio.run(nats_round_trip(f"tls://127.0.0.1:{nats_port}", prefix)) == b"hello over mTLS"
        assert asyncio.run(postgres_answer(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres")) == 42
    finally:
        code, out, err = stop_up(process)
    assert code == 0, err
    assert out.strip().endswith("stopped")
    assert port_is_free(nats_port)
    assert port_is_free(pg_port)
    leftovers = subprocess.run(["pgrep", "-f", str(prefix)], capture_output=True, text=True, check=False)
    assert leftovers.stdout.strip() == ""

    # State survives: a second run reuses the same certificates and database cluster.
    ca_before = (prefix / "tls" / "ca.crt").read_bytes()
    process, _ = start_up(prefix, nats_port, pg_port)
    try:
        assert (prefix / "tls" / "ca.crt").read_bytes() == ca_before
        assert asyncio.run(nats_round_trip(f"tls://127.0.0.1:{nats_port}", prefix)) == b"hello over mTLS"
    finally:
        code, _, err = stop_up(process)
    assert code == 0, err


def test_up_with_a_taken_port_is_one_clear_line(prefix: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                str(ZONEGATE),
                "up",
                "--prefix",
                str(prefix),
                "--nats-port",
                str(port),
                "--pg-port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: port {port} for nats is already in use on 127.0.0.1 (choose another with --nats-port)"
    )


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
