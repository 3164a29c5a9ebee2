"""Certificates, rendered nats-server configs and client helpers for the bus tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nats.aio.client import Client

from harness import free_port
from zonegate.bus import certificates, nats_config
from zonegate.bus.certificates import Issued
from zonegate.embedded.nats_server import NatsServer
from zonegate.settings import Settings, load_settings

# What a refused client sees: a TLS alert, a closed socket, "Authorization Violation", or nothing.
REFUSED = (ssl.SSLError, ConnectionError, nats.errors.Error, asyncio.TimeoutError)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def write(issued: Issued, directory: Path, stem: str) -> Pair:
    pair = Pair(directory / f"{stem}.crt", directory / f"{stem}.key")
    certificates.write_pair(issued, pair.cert, pair.key)
    return pair


@dataclass(frozen=True)
class Pki:
    """A CA, a nats-server certificate, one per role, and certificates that must be refused."""

    directory: Path
    ca: Pair
    server: Pair
    control_plane: Pair
    data_plane: Pair
    no_role: Pair  # signed by the CA, but without a role identity
    stranger: Pair  # a data-plane certificate from another CA


def role_less_certificate(ca: Issued, name: str) -> Issued:
    """A client certificate the CA signed with no role identity SAN (certificates.py refuses to make one)."""
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca.key, hashes.SHA384())
    )
    return Issued(cert, key)


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = certificates.generate_ca()
    other_ca = certificates.generate_ca(common_name="another CA")
    hosts = ["127.0.0.1", "localhost"]
    return Pki(
        directory=directory,
        ca=write(ca, directory, "ca"),
        server=write(
            certificates.issue_certificate(ca, role="server", name="nats-1", hosts=hosts), directory, "server"
        ),
        control_plane=write(
            certificates.issue_certificate(ca, role="control_plane", name="cp1"), directory, "cp"
        ),
        data_plane=write(certificates.issue_certificate(ca, role="data_plane", name="dp1"), directory, "dp"),
        no_role=write(role_less_certificate(ca, "rogue"), directory, "no-role"),
        stranger=write(
            certificates.issue_certificate(other_ca, role="data_plane", name="dp1"), directory, "stranger"
        ),
    )


@dataclass
class Rendered:
    """A ``config_renderer`` for NatsServer that renders ``zonegate nats config`` options.

    ``extra(self)`` gives the options beyond the ports NatsServer picks; it may ask ``self.port``
    for more listeners (leaf nodes), which get a fresh free port on every render, so the server's
    retry after a bind failure moves them too. The last render is the one running; servers
    started this way are not restarted.
    """

    mode: nats_config.Mode
    cert: Pair
    ca: Path | None = None
    extra: Callable[[Rendered], dict[str, Any]] = lambda _: {}
    server_name: str = "zg-bus"
    ports: dict[str, int] = field(default_factory=dict)
    text: str = ""

    def __call__(self, port: int, monitoring_port: int | None, store_dir: Path) -> str:
        fields: dict[str, Any] = {
            "mode": self.mode,
            "cert_file": self.cert.cert,
            "key_file": self.cert.key,
            "ca_file": self.ca,
            "listen": f"127.0.0.1:{port}",
            "store_dir": store_dir,
            "server_name": self.server_name,
            "http": f"127.0.0.1:{monitoring_port}" if monitoring_port is not None else None,
        }
        fields.update(self.extra(self))
        self.text = nats_config.render(nats_config.NatsConfigOptions(**fields))
        return self.text

    def port(self, name: str) -> int:
        self.ports[name] = free_port()
        return self.ports[name]


def node_settings(mode: str, pair: Pair, ca: Path | None = None, **env: str) -> Settings:
    environ = {
        "ZONEGATE_CLUSTER_MTLS": mode,
        "ZONEGATE_CLUSTER_CERT": str(pair.cert),
        "ZONEGATE_CLUSTER_CERT_KEY": str(pair.key),
    }
    if ca is not None:
        environ["ZONEGATE_CLUSTER_CA_CERT"] = str(ca)
    environ.update({f"ZONEGATE_{k.upper()}": v for k, v in env.items()})
    return load_settings(environ, None)


@dataclass
class Connected:
    client: Client
    errors: list[Exception]


async def connect(server: NatsServer, tls: ssl.SSLContext | None, **options: Any) -> Connected:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    client: Client = await nats.connect(
        server.url,
        tls=tls,
        error_cb=on_error,
        connect_timeout=5,  # generous: the machine may be busy, and a refusal comes at once anyway
        allow_reconnect=False,
        max_reconnect_attempts=0,
        **options,
    )
    return Connected(client, errors)


async def refused(server: NatsServer, tls: ssl.SSLContext | None, **options: Any) -> bool:
    """True when the server does not let a client with ``tls`` in."""
    try:
        connected = await connect(server, tls, **options)
    except REFUSED:
        return True
    await connected.client.close()
    return False


async def server_logged(server: NatsServer, text: str) -> bool:
    for _ in range(250):  # the log has no event to wait on: poll for up to five seconds
        if text in server.read_log():
            return True
        await asyncio.sleep(0.02)
    return False
