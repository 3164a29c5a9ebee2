"""Real hybrid-mode processes for the benchmarks: PostgreSQL, a TLS nats-server, CPs and DPs.

A trimmed copy of what ``tests/harness/hybrid.py`` does (that module imports pytest helpers and
expects the tests' import path): the shared cluster certificate, a nats-server that requires and
verifies it, an embedded PostgreSQL (fsync off, as in ``store_bench.py``) with a bootstrapped
database, and ``zonegate start`` processes as control planes and data planes on free ports, all
logging JSON to a file per process so the benchmark can read their timing lines back.
Everything it starts, it stops (``Stack`` is a context manager).

``python hybrid_stack.py subscribers --count N ...`` forks N lightweight stand-ins for data planes, for
measuring what the control plane spends per change as data planes multiply: each connects with
the cluster certificate, heartbeats, listens on the notify subject, reads the newest snapshot
from the config stream on each announcement (``config_stream.read_latest``, as the config agent
does), and acks it, without decoding or applying it. It also answers the benchmark's ping
subject, for the plain-NATS baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import nats

from zonegate import __version__
from zonegate.bus import config_stream
from zonegate.bus.certificates import generate_cluster_certificate
from zonegate.bus.subjects import DEFAULT_GROUP, Names
from zonegate.bus.v1 import bus_pb2
from zonegate.embedded.nats_server import NatsServer, NatsServerTls
from zonegate.embedded.ports import free_port
from zonegate.embedded.postgres import EmbeddedPostgres, create_database

ZONEGATE = Path(sys.executable).with_name("zonegate")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CLUSTER = "bench"


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ZONEGATE_")}


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat (fields 14 and 15), in seconds."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields[0] is field 3 (state)


def get_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def log_events(path: Path, event: str, offset: int = 0) -> list[dict[str, Any]]:
    """Every JSON log line of ``event`` in ``path`` from byte ``offset`` on."""
    found = []
    with open(path, "rb") as handle:
        handle.seek(offset)
        for line in handle:
            if b'"' + event.encode() + b'"' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event:
                found.append(record)
    return found


@dataclass
class Process:
    """A ``zonegate start`` process, its log file, its ports."""

    name: str
    env: dict[str, str]
    log_path: Path
    ports: dict[str, int]
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def url(self, port: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [str(ZONEGATE), "start"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_http(self, port: str, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.popen is not None
            if self.popen.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")
            try:
                get_json(f"{self.url(port)}{path}", timeout=1)
                return
            except (OSError, ValueError):
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer on {port} {path} within {timeout}s")

    def stop(self, timeout: float = 20) -> None:
        popen, self.popen = self.popen, None
        if popen is None or popen.poll() is not None:
            return
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=10)


@dataclass
class Stack:
    """PostgreSQL, a TLS nats-server, the cluster certificate; ``add_cp`` / ``add_dp`` start nodes."""

    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="zonegate-hybrid-bench-")))
    postgres: EmbeddedPostgres = field(init=False)
    nats: NatsServer = field(init=False)
    dsn: str = field(init=False, default="")
    cert: Path = field(init=False)
    key: Path = field(init=False)
    nodes: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        os.chmod(self.base, 0o711)  # as root, postgres runs as another user who must traverse it
        certs = self.base / "certs"
        certs.mkdir()
        self.cert, self.key = certs / "cluster.crt", certs / "cluster.key"
        issued = generate_cluster_certificate()
        self.cert.write_bytes(issued.cert_pem())
        self.key.write_bytes(issued.key_pem())
        self.key.chmod(0o600)
        self.postgres = EmbeddedPostgres(self.base / "pg", fsync=False)
        self.nats = NatsServer(
            self.base / "nats", tls=NatsServerTls(cert_file=self.cert, key_file=self.key, ca_file=self.cert)
        )

    def __enter__(self) -> Stack:
        try:
            self.postgres.start()
            self.dsn = create_database(self.postgres.dsn, "hybrid_bench")
            subprocess.run(
                [str(ZONEGATE), "migrations", "bootstrap"],
                env=clean_environment() | {"ZONEGATE_PG_DSN": self.dsn},
                capture_output=True,
                check=True,
                timeout=120,
            )
            self.nats.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.close()

    def close(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        self.nats.stop()
        self.postgres.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def cluster_env(self) -> dict[str, str]:
        return clean_environment() | {
            "ZONEGATE_CLUSTER_NAME": CLUSTER,
            "ZONEGATE_CLUSTER_CERT": str(self.cert),
            "ZONEGATE_CLUSTER_CERT_KEY": str(self.key),
            "ZONEGATE_CLUSTER_NATS_URL": self.nats.url,
            "ZONEGATE_LOG_LEVEL": "info",
            "ZONEGATE_LOG_FORMAT": "json",
        }

    def _node(
        self, name: str, env: dict[str, str], ports: dict[str, int], settings: dict[str, str]
    ) -> Process:
        prefix = self.base / name
        prefix.mkdir()
        env = env | {"ZONEGATE_PREFIX": str(prefix)}
        env |= {f"ZONEGATE_{key.upper()}": value for key, value in settings.items()}
        node = Process(name, env, prefix / "node.log", ports)
        self.nodes.append(node)
        return node

    def add_cp(self, **settings: str) -> Process:
        port = free_port()
        env = self.cluster_env() | {
            "ZONEGATE_ROLE": "control_plane",
            "ZONEGATE_PG_DSN": self.dsn,
            "ZONEGATE_ADMIN_LISTEN": f"127.0.0.1:{port}",
        }
        node = self._node(f"cp-{len(self.nodes)}", env, {"admin": port}, settings)
        node.start()
        node.wait_http("admin", "/status")
        return node

    def add_dps(self, count: int, **settings: str) -> list[Process]:
        """Start ``count`` data planes at once (their start-ups overlap), then wait for each."""
        started = []
        for _ in range(count):
            proxy, status = free_port(), free_port()
            env = self.cluster_env() | {
                "ZONEGATE_ROLE": "data_plane",
                "ZONEGATE_DATABASE": "off",
                "ZONEGATE_PROXY_LISTEN": f"127.0.0.1:{proxy}",
                "ZONEGATE_STATUS_LISTEN": f"127.0.0.1:{status}",
                "ZONEGATE_ADMIN_LISTEN": "off",
                "ZONEGATE_WORKERS": "1",
            }
            node = self._node(f"dp-{len(self.nodes)}", env, {"proxy": proxy, "status": status}, settings)
            node.start()
            started.append(node)
        for node in started:
            node.wait_http("status", "/status")
        return started

    def data_planes(self) -> Iterator[Process]:
        return (node for node in self.nodes if node.name.startswith("dp-") and node.popen is not None)


# -- subscriber processes --------------------------------------------------------------------------


@dataclass
class Served:
    version: int = 0
    config_hash: str = ""


async def _subscriber(args: argparse.Namespace, index: int) -> None:
    logging.getLogger("asyncio").setLevel(logging.ERROR)  # TLS close chatter at shutdown
    names = Names(args.cluster)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_cert_chain(args.cert, args.key)
    context.check_hostname = False  # shared mode: the cluster certificate is pinned
    context.load_verify_locations(cafile=args.cert)
    nc = await nats.connect(args.nats, tls=context, name=f"bench-subscriber-{index}")
    js = nc.jetstream(timeout=10)
    node = str(uuid.uuid4())
    served = Served()
    lock = asyncio.Lock()
    tasks: set[asyncio.Task[None]] = set()

    async def heartbeat() -> None:
        beat = bus_pb2.Heartbeat(
            node_id=node,
            hostname=socket.gethostname(),
            ip="127.0.0.1",
            zonegate_version=__version__,
            labels={"bench": "subscriber"},
            config_version=served.version,
            config_hash=served.config_hash,
            sent_at_ms=int(time.time() * 1000),
            sync_status="normal",
            group=DEFAULT_GROUP,
            interval_seconds=args.heartbeat,
        )
        await nc.publish(names.heartbeat_subject(node), beat.SerializeToString())

    async def read_and_ack() -> None:
        async with lock:
            stored = await config_stream.read_latest(js, names, DEFAULT_GROUP)
            if stored is None:
                return
            header = bus_pb2.SnapshotHeader.FromString(bus_pb2.SignedSnapshot.FromString(stored.data).header)
            if header.version <= served.version and served.config_hash:
                return
            served.version, served.config_hash = int(header.version), header.config_hash
            ack = bus_pb2.Ack(
                node_id=node,
                version=header.version,
                config_hash=header.config_hash,
                applied=True,
                sync_status="normal",
                serving_version=header.version,
                serving_hash=header.config_hash,
                at_ms=int(time.time() * 1000),
                stream_sequence=stored.sequence,
            )
            await nc.publish(names.ack_subject(node), ack.SerializeToString())

    async def on_announcement(msg: Any) -> None:
        announcement = bus_pb2.Announcement.FromString(msg.data)
        if announcement.version > served.version:
            task = asyncio.get_running_loop().create_task(read_and_ack())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def on_ping(msg: Any) -> None:
        await msg.respond(b"pong")

    await nc.subscribe(names.notify_subject(DEFAULT_GROUP), cb=on_announcement)
    for fan_out in PING_FAN_OUTS:
        if index < fan_out:
            await nc.subscribe(f"{args.ping_prefix}.{fan_out}", cb=on_ping)
    await heartbeat()
    await read_and_ack()
    await nc.flush()
    os.write(1, f"ready {node}\n".encode())  # one write: forked siblings share the pipe
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        try:
            async with asyncio.timeout(args.heartbeat):
                await stop.wait()
        except TimeoutError:
            await heartbeat()
    await nc.close()


PING_FAN_OUTS = (1, 10, 100, 1000)  # a subscriber answers pings sent to the fan-outs above its index


def _spawn_subscribers(args: argparse.Namespace) -> None:
    """Fork ``count`` subscriber processes (imports paid once); SIGTERM here stops them all."""
    children = []
    for index in range(args.first, args.first + args.count):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                asyncio.run(_subscriber(args, index))
            except BaseException as exc:
                os.write(1, f"failed {index} {exc!r}\n".encode())
                code = 1
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: Any) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    for pid in children:
        os.waitpid(pid, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description="lightweight data-plane stand-ins (see the module doc)")
    parser.add_argument("mode", choices=["subscribers"])
    parser.add_argument("--nats", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--cluster", default=CLUSTER)
    parser.add_argument("--first", type=int, default=0, help="index of the first (decides its pings)")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--ping-prefix", default="zgbench.ping")
    parser.add_argument("--heartbeat", type=int, default=10, help="seconds, as a data plane's default")
    _spawn_subscribers(parser.parse_args())


if __name__ == "__main__":
    main()
