"""``zonegate up``: the local stack, as far as it exists today.

Today it starts the infrastructure every later piece talks to: an embedded nats-server with
mTLS and JetStream, and an embedded PostgreSQL, both keeping their state under the prefix
(``.zonegate/`` by default) so a restart finds it again; it also checks the sample config.
The control plane and the data planes join this stack with the local-stack issue.
Ctrl-C (or SIGTERM) stops everything in reverse order and leaves no process behind.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Final, Self

import structlog

from zonegate.core import canonical, declarative
from zonegate.embedded import (
    EmbeddedPostgres,
    NatsServer,
    NatsServerTls,
    TlsMaterial,
    generate_tls_material,
)
from zonegate.embedded.tls_material import CertKeyPair

log = structlog.get_logger(__name__)

CLIENT_NAMES: Final = ("control-plane", "data-plane")
SAMPLE_CONFIG: Final = Path(__file__).parent / "sample" / "kong.yml"


class StackError(Exception):
    """A start-up failure the user can fix (e.g. a port in use); printed as one line."""


@dataclass(frozen=True, slots=True)
class StackOptions:
    prefix: Path
    nats_port: int
    pg_port: int


def ensure_port_free(name: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR as the servers themselves use it: a port left in TIME_WAIT by our own last
        # run is free to them, and only a live listener counts as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise StackError(
                f"port {port} for {name} is already in use on 127.0.0.1 (choose another with --{name}-port)"
            ) from None


def load_or_generate_tls(directory: Path) -> TlsMaterial:
    """Reuse the certificates of an earlier run, so clients configured then keep working."""
    clients = {
        name: CertKeyPair(directory / f"client-{name}.crt", directory / f"client-{name}.key")
        for name in CLIENT_NAMES
    }
    files = [directory / "ca.crt", directory / "ca.key", directory / "server.crt", directory / "server.key"]
    files += [path for pair in clients.values() for path in (pair.cert, pair.key)]
    if all(path.is_file() for path in files):
        return TlsMaterial(
            directory=directory,
            ca_cert=directory / "ca.crt",
            ca_key=directory / "ca.key",
            server=CertKeyPair(directory / "server.crt", directory / "server.key"),
            clients=MappingProxyType(clients),
        )
    return generate_tls_material(directory, client_names=CLIENT_NAMES, ca_common_name="zonegate local CA")


class LocalStack:
    """Owns the embedded servers; ``start`` brings them up, ``stop`` takes them down in reverse."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.tls: TlsMaterial | None = None
        self.nats: NatsServer | None = None
        self.postgres: EmbeddedPostgres | None = None

    def start(self) -> None:
        ensure_port_free("nats", self.options.nats_port)
        ensure_port_free("pg", self.options.pg_port)
        self.options.prefix.mkdir(parents=True, exist_ok=True)
        self.tls = load_or_generate_tls(self.options.prefix / "tls")
        self.nats = NatsServer(
            self.options.prefix / "nats",
            tls=NatsServerTls(self.tls.server.cert, self.tls.server.key, self.tls.ca_cert),
            port=self.options.nats_port,
            server_name="zonegate-local",
        )
        self.nats.start()
        self.postgres = EmbeddedPostgres(self.options.prefix / "postgres", port=self.options.pg_port)
        self.postgres.start()

    def stop(self) -> None:
        for server in (self.postgres, self.nats):
            if server is not None:
                server.stop()

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

    def summary(self) -> list[str]:
        assert self.tls is not None and self.nats is not None and self.postgres is not None
        config = declarative.loads(SAMPLE_CONFIG.read_text())
        client = self.tls.client("control-plane")
        return [
            f"NATS (mTLS, JetStream)  {self.nats.url}",
            f"  CA {self.tls.ca_cert}",
            f"  client cert {client.cert} key {client.key}",
            f"PostgreSQL              {self.postgres.dsn}",
            f"sample config           {SAMPLE_CONFIG}",
            f"  config_hash {canonical.config_hash(config).config_hash}",
            "Control plane and data planes: not yet part of the local stack (see README, Status).",
            "Press Ctrl-C to stop.",
        ]


def wait_for_stop_signal(on_ready: Callable[[], None]) -> None:
    """Block until SIGINT or SIGTERM: the one place this process handles signals."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        on_ready()
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
