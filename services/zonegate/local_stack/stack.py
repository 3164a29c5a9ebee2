"""``zonegate up``: Kong's hybrid-mode walkthrough as one command, on this machine.

In order: an embedded PostgreSQL (or the database the ``ZONEGATE_PG_*`` settings name), the
migrations, the shared-mode cluster certificate (``zonegate hybrid gen-cert``, once), an embedded
nats-server with the configuration ``zonegate nats config --mode shared`` writes, the sample config
when the database is empty, a demo upstream, a control plane, and a data plane in each of two
zones. Everything lives under the prefix (``.zonegate/``) and survives a restart; a lock file there
keeps a second ``zonegate up`` off the same state. ``stop`` takes it all down in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

from zonegate.bus import certificates, nats_config
from zonegate.control_plane.postgres import describe_dsn
from zonegate.embedded import EmbeddedPostgres, NatsServer
from zonegate.embedded.ports import LOOPBACK
from zonegate.local_stack import database, nodes
from zonegate.local_stack.demo_upstream import DemoUpstream
from zonegate.local_stack.ports import StackError, StackPorts, ensure_free
from zonegate.settings import Settings

ZONES: Final = ("a", "b")
READY_TIMEOUT: Final = 120.0


@dataclass(frozen=True, slots=True)
class StackOptions:
    prefix: Path
    ports: StackPorts
    # The database the user's ZONEGATE_PG_* settings name; None: the embedded PostgreSQL.
    external_dsn: str | None = None


def external_database(settings: Settings, environ: dict[str, str] | None = None) -> str | None:
    """The DSN of the user's own PostgreSQL when any ``ZONEGATE_PG_*`` variable is set."""
    names = environ if environ is not None else os.environ
    return settings.postgres_dsn() if any(name.startswith("ZONEGATE_PG_") for name in names) else None


class LocalStack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.prefix = options.prefix.resolve()
        self.logs = self.prefix / "logs"
        self.cert = self.prefix / "cluster.crt"
        self.key = self.prefix / "cluster.key"
        self._lock: IO[bytes] | None = None
        self.nats: NatsServer | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.dsn = ""
        self.prepared: database.Prepared | None = None
        self.upstream: DemoUpstream | None = None
        self.control_plane: nodes.NodeProcess | None = None
        self.data_planes: list[nodes.NodeProcess] = []

    # -- start ----------------------------------------------------------------------------------------

    def start(self) -> None:
        ports = self.options.ports
        self.prefix.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        ensure_free(ports, skip=frozenset({"pg"}) if self.options.external_dsn else frozenset())
        self.logs.mkdir(exist_ok=True)
        self._ensure_cluster_certificate()
        self._start_database()
        self.upstream = DemoUpstream(ports.upstream)
        self.upstream.start()
        self.prepared = asyncio.run(database.prepare(self.dsn, self.upstream.url))
        self._start_nats()
        assert self.nats is not None
        cluster = {
            "cluster_mtls": "shared",
            "cluster_cert": str(self.cert),
            "cluster_cert_key": str(self.key),
            "cluster_nats_url": self.nats.url,
        }
        self.control_plane = nodes.control_plane(
            self.prefix / "control-plane", self.logs, cluster, self.dsn, ports.admin
        )
        self.control_plane.start()
        for zone in ZONES:
            prefix = self.prefix / f"data-plane-{zone}"
            node = nodes.data_plane(prefix, self.logs, cluster, zone, ports.proxy(zone), ports.status(zone))
            self.data_planes.append(node)
            node.start()
        self._wait_ready()

    def _take_lock(self) -> None:
        lock = open(self.prefix / "up.lock", "ab")  # noqa: SIM115 - held until stop()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise StackError(f"another 'zonegate up' is running with its state in {self.prefix}") from None
        self._lock = lock

    def _ensure_cluster_certificate(self) -> None:
        """Kong's ``kong hybrid gen_cert`` step, done once: later runs reuse the pair."""
        if self.cert.exists() and self.key.exists():
            return
        try:
            certificates.write_pair(certificates.generate_cluster_certificate(), self.cert, self.key)
        except certificates.CertificateError as exc:
            raise StackError(str(exc)) from None

    def _start_database(self) -> None:
        if self.options.external_dsn is not None:
            self.dsn = self.options.external_dsn
            return
        self.postgres = EmbeddedPostgres(self.prefix / "postgres", port=self.options.ports.pg)
        self.postgres.start()
        exists = self.postgres.execute(
            f"SELECT 1 FROM pg_database WHERE datname = '{database.DATABASE_NAME}'"
        ).strip()
        self.dsn = (
            self.postgres.dsn_for(database.DATABASE_NAME)
            if exists
            else self.postgres.create_database(database.DATABASE_NAME)
        )

    def _start_nats(self) -> None:
        def render(port: int, monitoring_port: int | None, store_dir: Path) -> str:
            return nats_config.render(
                nats_config.NatsConfigOptions(
                    mode="shared",
                    cert_file=self.cert,
                    key_file=self.key,
                    listen=f"{LOOPBACK}:{port}",
                    store_dir=store_dir,
                    server_name="zonegate-local",
                )
            )

        self.nats = NatsServer(self.prefix / "nats", port=self.options.ports.nats, config_renderer=render)
        self.nats.start()

    def _wait_ready(self) -> None:
        """Until the control plane answers, both data planes serve, and the CP lists them in sync."""
        assert self.control_plane is not None
        waiting = [self.control_plane, *self.data_planes]
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            waiting = [node for node in waiting if not node.ready()]
            if not waiting and self._data_planes_in_sync():
                return
            time.sleep(0.2)
        names = ", ".join(node.name for node in waiting) or "the data planes' first heartbeats"
        raise StackError(f"not ready after {READY_TIMEOUT:.0f} s: {names} (logs in {self.logs})")

    def _data_planes_in_sync(self) -> bool:
        zones = {row["labels"].get("zone") for row in self.clustering() if row["sync_status"] == "normal"}
        return zones >= set(ZONES)

    def clustering(self) -> list[dict[str, Any]]:
        """The control plane's ``GET /clustering/data-planes`` rows."""
        url = f"{self.admin_url}/clustering/data-planes"
        with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=2) as answer:
            return list(json.load(answer)["data"])
        return []

    # -- run and stop ---------------------------------------------------------------------------------

    def check_running(self) -> None:
        """``StackError`` when a node has exited since the stack came up."""
        for node in [self.control_plane, *self.data_planes]:
            if node is not None:
                node.ready()

    def stop(self) -> None:
        for node in [*reversed(self.data_planes), self.control_plane]:
            if node is not None:
                node.stop()
        self.data_planes.clear()
        self.control_plane = None
        for server in (self.upstream, self.nats, self.postgres):
            if server is not None:
                server.stop()
        self.upstream = self.nats = self.postgres = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what to tell the user ------------------------------------------------------------------------

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.options.ports.admin}"

    def proxy_url(self, zone: str) -> str:
        return f"http://{LOOPBACK}:{self.options.ports.proxy(zone)}"

    def status_url(self, zone: str) -> str:
        return f"http://{LOOPBACK}:{self.options.ports.status(zone)}"

    def summary(self) -> Iterator[str]:
        assert self.nats is not None and self.upstream is not None and self.prepared is not None
        config = (
            "sample config loaded (demo-service, route /demo, key-auth, consumer demo-user)"
            if self.prepared.seeded
            else "kept the database's config"
        )
        yield f"Zonegate local stack is up; state in {self.prefix}, logs in {self.logs}"
        yield f"  Admin API            {self.admin_url}"
        for zone in ZONES:
            yield f"  proxy, zone {zone}        {self.proxy_url(zone)}   (Status API {self.status_url(zone)})"
        yield f"  NATS (mTLS)          {self.nats.url}   (cluster cert {self.cert})"
        yield f"  PostgreSQL           {describe_dsn(self.dsn)}"
        yield f"  demo upstream        {self.upstream.url}"
        yield f"  config version {self.prepared.version}: {config}"
        yield "Try:"
        tries = (
            (f"curl -i {self.proxy_url('a')}/demo", "401: key-auth wants a key"),
            (f"curl -i {self.proxy_url('b')}/demo -H 'apikey: demo-key'", "200 through zone b"),
            (f"curl -s {self.admin_url}/clustering/data-planes", "both data planes, in sync"),
        )
        width = max(len(command) for command, _ in tries)
        yield from (f"  {command:<{width}}   # {why}" for command, why in tries)
        yield "Press Ctrl-C to stop."
