"""Embedded servers for the local stack and the tests: real PostgreSQL and real nats-server processes.

Nothing here is used by a CP or DP in production; it starts the infrastructure they talk to when no
external one is given. Every class owns one child process and stops it in `stop()` or on context exit.
"""

from zonegate.embedded.nats_server import NatsServer, NatsServerError, NatsServerTls
from zonegate.embedded.ports import free_port, wait_for_port
from zonegate.embedded.postgres import EmbeddedPostgres, EmbeddedPostgresError
from zonegate.embedded.tls_material import (
    CertificateAuthority,
    CertKeyPair,
    TlsMaterial,
    client_ssl_context,
    generate_tls_material,
    issue_client_certificate,
    server_ssl_context,
)

__all__ = [
    "CertKeyPair",
    "CertificateAuthority",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "NatsServer",
    "NatsServerError",
    "NatsServerTls",
    "TlsMaterial",
    "client_ssl_context",
    "free_port",
    "generate_tls_material",
    "issue_client_certificate",
    "server_ssl_context",
    "wait_for_port",
]
