"""Reusable test harness: real nats-server, PostgreSQL and HTTP upstreams, plus port helpers.

The fixtures live in harness.fixtures and are registered by tests/conftest.py; the classes are importable
from here for tests that need more control than the fixtures give.
"""

from harness.echo_upstream import EchoRequest, EchoUpstream, EchoUpstreamFactory, filler
from harness.fixtures import NatsServerFactory, PostgresDatabase, PostgresServerInfo
from zonegate.embedded.ports import free_port, wait_for_port

__all__ = [
    "EchoRequest",
    "EchoUpstream",
    "EchoUpstreamFactory",
    "NatsServerFactory",
    "PostgresDatabase",
    "PostgresServerInfo",
    "filler",
    "free_port",
    "wait_for_port",
]
