"""Pytest fixtures for real infrastructure: nats-server, PostgreSQL, echo upstreams.

Registered from tests/conftest.py via `pytest_plugins`. Every process or thread a fixture starts is stopped
in its teardown, which pytest runs whether the test passed or failed.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.echo_upstream import EchoUpstream, EchoUpstreamFactory
from zonegate.embedded.nats_server import ConfigRenderer, NatsServer, NatsServerTls
from zonegate.embedded.postgres import EmbeddedPostgres, create_database, drop_database
from zonegate.embedded.tls_material import (
    CertKeyPair,
    TlsMaterial,
    client_ssl_context,
    generate_tls_material,
    issue_client_certificate,
)

PG_DSN_ENV = "ZONEGATE_TEST_PG_DSN"

# -- NATS ----------------------------------------------------------------------------------------------


class NatsServerFactory:
    """Starts nats-servers for one test; all servers with `tls=True` share one CA and server certificate."""

    def __init__(self, base_dir: Path, name_prefix: str = "zg-test") -> None:
        self.base_dir = base_dir
        self.name_prefix = name_prefix
        self.servers: list[NatsServer] = []
        self._tls: TlsMaterial | None = None
        self._extra_clients: dict[str, CertKeyPair] = {}

    def __call__(
        self,
        *,
        tls: bool = False,
        monitoring: bool = False,
        jetstream: bool = True,
        server_name: str | None = None,
        extra_config: str = "",
        config_renderer: ConfigRenderer | None = None,
    ) -> NatsServer:
        """A started server; with `config_renderer` the whole config is the renderer's (TLS included)."""
        index = len(self.servers) + 1
        server = NatsServer(
            self.base_dir / f"nats-{index}",
            tls=self.server_tls if tls else None,
            jetstream=jetstream,
            monitoring=monitoring,
            server_name=server_name or f"{self.name_prefix}-{index}",
            extra_config=extra_config,
            config_renderer=config_renderer,
        )
        # Tracked before start: a server that fails half-way is still stopped at teardown.
        self.servers.append(server)
        server.start()
        return server

    @property
    def tls(self) -> TlsMaterial:
        """CA, server and default client ("client") certificates, generated on first use."""
        if self._tls is None:
            self._tls = generate_tls_material(self.base_dir / "tls")
        return self._tls

    @property
    def server_tls(self) -> NatsServerTls:
        return NatsServerTls(
            cert_file=self.tls.server.cert, key_file=self.tls.server.key, ca_file=self.tls.ca_cert
        )

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_cert

    def client_cert(self, common_name: str = "client") -> CertKeyPair:
        """Paths of a client certificate with CN `common_name` (issued by the shared CA on first ask)."""
        if common_name in self.tls.clients:
            return self.tls.client(common_name)
        if common_name not in self._extra_clients:
            self._extra_clients[common_name] = issue_client_certificate(self.tls, common_name)
        return self._extra_clients[common_name]

    def ssl_context(self, client: str | None = "client") -> ssl.SSLContext:
        """A client SSLContext trusting the CA; `client=None` presents no certificate (to be refused)."""
        if client is None:
            return client_ssl_context(self.ca_file)
        pair = self.client_cert(client)
        return client_ssl_context(self.ca_file, pair.cert, pair.key)

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others; report the first failure after
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def nats_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServerFactory]:
    """Call it to start servers: `nats_server_factory(tls=True, monitoring=True)`; all stopped after."""
    factory = NatsServerFactory(tmp_path_factory.mktemp("nats"))
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def nats_server(nats_server_factory: NatsServerFactory) -> NatsServer:
    """A started plain-text nats-server with JetStream on a free port (`.url` is nats://127.0.0.1:PORT)."""
    return nats_server_factory()


# -- PostgreSQL ----------------------------------------------------------------------------------------


@dataclass
class PostgresServerInfo:
    """The session's PostgreSQL: an embedded one, or the server named by ZONEGATE_TEST_PG_DSN."""

    dsn: str
    embedded: EmbeddedPostgres | None
    databases_created: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PostgresDatabase:
    """A database created for one test module (dropped after it)."""

    dsn: str
    name: str
    server_dsn: str


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServerInfo]:
    """Session-wide PostgreSQL. Prefer `postgres`, which hands each module its own database."""
    external = os.environ.get(PG_DSN_ENV)
    if external:
        yield PostgresServerInfo(dsn=external, embedded=None)
        return
    # Not pytest's tmp_path: its parents are mode 0700, and as root postgres runs as another user who
    # must be able to traverse to the data directory. mkdtemp + 0711 lets it through without listing.
    base = Path(tempfile.mkdtemp(prefix="zonegate-pg-"))
    os.chmod(base, 0o711)
    server = EmbeddedPostgres(base / "data", fsync=False)
    try:
        server.start()
        yield PostgresServerInfo(dsn=server.dsn, embedded=server)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _database_name(module_name: str) -> str:
    tail = re.sub(r"[^a-z0-9_]", "_", module_name.rsplit(".", 1)[-1].lower())
    # 63 bytes is PostgreSQL's identifier limit; the random suffix keeps parallel runs apart.
    return f"zg_{tail[:40]}_{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def postgres(
    request: pytest.FixtureRequest, postgres_server: PostgresServerInfo
) -> Iterator[PostgresDatabase]:
    """A fresh, empty database for this test module: `.dsn` (postgresql://...), `.name`, `.server_dsn`."""
    name = _database_name(request.module.__name__)
    dsn = create_database(postgres_server.dsn, name)
    postgres_server.databases_created.append(name)
    try:
        yield PostgresDatabase(dsn=dsn, name=name, server_dsn=postgres_server.dsn)
    finally:
        drop_database(postgres_server.dsn, name)


# -- HTTP upstreams ------------------------------------------------------------------------------------


@pytest.fixture
def echo_upstream_factory() -> Iterator[EchoUpstreamFactory]:
    """Call it to start more echo upstreams: `echo_upstream_factory("b")`; all stopped after the test."""
    factory = EchoUpstreamFactory()
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def echo_upstream(echo_upstream_factory: EchoUpstreamFactory) -> EchoUpstream:
    """A started echo upstream: `.host`, `.port`, `.url`, counters; see harness.echo_upstream."""
    return echo_upstream_factory("echo")
