"""Fixtures for hybrid-mode tests: a cluster of real processes over one TLS nats-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.fixtures import PostgresDatabase
from harness.hybrid import HybridCluster
from zonegate.embedded.postgres import create_database, drop_database


@pytest.fixture
def cluster(
    tmp_path: Path, postgres: PostgresDatabase, request: pytest.FixtureRequest
) -> Iterator[HybridCluster]:
    """A bootstrapped database of its own, a started TLS nats-server; add CPs and DPs as needed."""
    name = f"{postgres.name}_{abs(hash(request.node.name)) % 10**8}"
    dsn = create_database(postgres.server_dsn, name)
    hybrid = HybridCluster(tmp_path, dsn)
    try:
        hybrid.bootstrap()
        hybrid.start_nats()
        yield hybrid
    finally:
        hybrid.stop()
        drop_database(postgres.server_dsn, name)
