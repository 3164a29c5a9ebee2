"""Hybrid mode in PKI mode: every node has its own CA-signed certificate and a least-privilege
NATS user for its role. The whole flow must work within those permissions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.echo_upstream import EchoUpstream
from harness.fixtures import PostgresDatabase
from harness.hybrid import HybridCluster, wait_for
from zonegate.bus import nats_config
from zonegate.bus.certificates import Issued, generate_ca, issue_certificate
from zonegate.embedded.nats_server import NatsServer
from zonegate.embedded.postgres import create_database, drop_database

from .test_hybrid_outages import add_route, wait_served

pytestmark = pytest.mark.slow


def write(directory: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(issued.cert_pem())
    key.write_bytes(issued.key_pem())
    key.chmod(0o600)
    return cert, key


@pytest.fixture
def pki_cluster(
    tmp_path: Path, postgres: PostgresDatabase
) -> Iterator[tuple[HybridCluster, dict[str, Path]]]:
    name = f"{postgres.name}_pki"
    dsn = create_database(postgres.server_dsn, name)
    certs = tmp_path / "pki"
    certs.mkdir()
    ca = generate_ca()
    ca_cert, _ = write(certs, "ca", ca)
    server_cert, server_key = write(certs, "server", issue_certificate(ca, role="server", name="nats"))
    cp_cert, cp_key = write(certs, "cp", issue_certificate(ca, role="control_plane", name="cp-1"))
    dp_cert, dp_key = write(certs, "dp", issue_certificate(ca, role="data_plane", name="dp-1"))
    cluster = HybridCluster(tmp_path, dsn)
    cluster.nats = NatsServer(
        tmp_path / "nats-pki",
        config_renderer=lambda port, http, store: nats_config.render(
            nats_config.NatsConfigOptions(
                mode="pki",
                cert_file=server_cert,
                key_file=server_key,
                ca_file=ca_cert,
                listen=f"127.0.0.1:{port}",
                store_dir=store,
                server_name="nats",
            )
        ),
    )
    paths = {"ca": ca_cert, "cp_cert": cp_cert, "cp_key": cp_key, "dp_cert": dp_cert, "dp_key": dp_key}
    try:
        cluster.bootstrap()
        cluster.start_nats()
        yield cluster, paths
    finally:
        cluster.stop()
        drop_database(postgres.server_dsn, name)


def test_pki_mode_end_to_end(
    pki_cluster: tuple[HybridCluster, dict[str, Path]], echo_upstream: EchoUpstream
) -> None:
    cluster, paths = pki_cluster
    common = {"cluster_mtls": "pki", "cluster_ca_cert": str(paths["ca"]), "cluster_server_name": "nats"}
    cp = cluster.add_control_plane(
        cluster_cert=str(paths["cp_cert"]), cluster_cert_key=str(paths["cp_key"]), **common
    )
    dp = cluster.add_data_plane(
        cluster_cert=str(paths["dp_cert"]), cluster_cert_key=str(paths["dp_key"]), **common
    )
    add_route(cp, echo_upstream, "one")
    wait_served(dp, "/one")

    def in_sync() -> bool:
        rows = cp.api("GET", "/clustering/data-planes")[1]["data"]
        return len(rows) == 1 and rows[0]["sync_status"] == "normal"

    wait_for(in_sync, 15, "the DP listed in sync")
    assert "permissions violation" not in (dp.read_log() + cp.read_log()).lower()
    assert dp.status()["clustering"]["bus_connected"] is True
