"""Rotating the shared cluster key with real processes (ops/runbooks/rotate-cluster-certificates.md).

A data plane holding the bundle [old, new] takes snapshots signed with either key; a control
plane restarted on the new key re-signs the current version by itself (no Admin API write), and
the bundled data plane neither refuses nor rebuilds anything. A data plane that trusts only the
old key refuses the new signatures and keeps serving what it had.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest

from harness.echo_upstream import EchoUpstream
from harness.fixtures import PostgresDatabase
from harness.hybrid import HybridCluster, wait_for
from harness.zonegate_node import ZonegateNode
from zonegate.bus import certificates, config_stream, nats_config, snapshot
from zonegate.bus.signing import Verifier
from zonegate.bus.subjects import Names
from zonegate.bus.tls import client_tls
from zonegate.embedded.nats_server import NatsServer, NatsServerTls
from zonegate.embedded.postgres import create_database, drop_database
from zonegate.settings import load_settings

from .test_hybrid_e2e import serves
from .test_hybrid_outages import add_route, wait_served

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Rotation:
    cluster: HybridCluster
    old_cert: Path
    new_cert: Path
    new_key: Path
    old_first: Path  # presents the old certificate, trusts both
    new_first: Path  # presents the new one, trusts both


@pytest.fixture
def rotation(tmp_path: Path, postgres: PostgresDatabase) -> Iterator[Rotation]:
    """Runbook step 1 done: the nats-server presents the old certificate and trusts both. Nodes
    get the old certificate alone unless a test gives them a bundle."""
    name = f"{postgres.name}_rotation"
    dsn = create_database(postgres.server_dsn, name)
    certs = tmp_path / "rotation"
    certs.mkdir()
    paths = {}
    for stem in ("old", "new"):
        paths[stem] = (certs / f"{stem}.crt", certs / f"{stem}.key")
        certificates.write_pair(certificates.generate_cluster_certificate(), *paths[stem])
    old_pem, new_pem = paths["old"][0].read_bytes(), paths["new"][0].read_bytes()
    old_first, new_first = certs / "old-first.crt", certs / "new-first.crt"
    old_first.write_bytes(old_pem + new_pem)
    new_first.write_bytes(new_pem + old_pem)
    cluster = HybridCluster(tmp_path, dsn)
    cluster.cert, cluster.key = paths["old"]
    cluster.nats = NatsServer(
        tmp_path / "nats-rotation",
        tls=NatsServerTls(cert_file=old_first, key_file=paths["old"][1], ca_file=old_first),
    )
    try:
        cluster.bootstrap()
        cluster.start_nats()
        yield Rotation(cluster, paths["old"][0], paths["new"][0], paths["new"][1], old_first, new_first)
    finally:
        cluster.stop()
        drop_database(postgres.server_dsn, name)


async def latest_on_bus(cluster: HybridCluster, trusted: Path) -> snapshot.OpenedSnapshot | None:
    """The newest snapshot, opened with only ``trusted``; None when that refuses it."""
    tls = client_tls(load_settings(cluster.cluster_env()))
    nc = await nats.connect(cluster.nats.url, tls=tls.context, tls_hostname=tls.hostname)
    try:
        stored = await config_stream.read_latest(nc.jetstream(), Names("default"), "default")
    finally:
        await nc.close()
    if stored is None:
        return None
    try:
        return snapshot.open_message(
            stored.data, Verifier.shared(trusted), cluster="default", group="default"
        )
    except snapshot.SnapshotRejected:
        return None


def applied_versions(log: str) -> list[int]:
    """The versions of the ``config_agent.applied`` lines of a node's log (console or JSON)."""
    lines = [line for line in log.splitlines() if "config_agent.applied" in line]
    return [int(match.group(1)) for line in lines if (match := _VERSION.search(line))]


_VERSION = re.compile(r'\bversion"?[=:] ?(\d+)')


def clustering(node: ZonegateNode) -> dict[str, Any]:
    return dict(node.status()["clustering"])


def test_a_control_plane_on_a_new_key_reaches_bundled_data_planes(
    rotation: Rotation, echo_upstream: EchoUpstream
) -> None:
    cluster = rotation.cluster
    old_cp = cluster.add_control_plane()
    bundled = cluster.add_data_plane(cluster_cert=str(rotation.old_first))  # runbook step 2 done
    behind = cluster.add_data_plane()  # step 2 skipped: trusts the old certificate only
    add_route(old_cp, echo_upstream, "one")
    for node in (bundled, behind):
        wait_served(node, "/one")
    version = clustering(bundled)["config_version"]
    assert isinstance(version, int) and version > 0
    old_cp.stop()

    # Step 4: the control plane signs with the new key. No write: it re-signs the current version.
    new_cp = cluster.add_control_plane(
        cluster_cert=str(rotation.new_first), cluster_cert_key=str(rotation.new_key)
    )

    def re_signed() -> bool:
        opened = asyncio.run(latest_on_bus(cluster, rotation.new_cert))
        return opened is not None and opened.version == version

    wait_for(re_signed, 20, "the current version re-signed with the new key")
    assert "publisher.resigning" in new_cp.read_log()

    # The data plane that trusts only the old key refuses it and keeps serving.
    def refused() -> bool:
        state = clustering(behind)
        return state["sync_status"] == "config_rejected"

    wait_for(refused, 15, "the old-key-only data plane to refuse the new signature")
    assert clustering(behind)["last_error"] == "signature check failed: bad signature"
    assert serves(behind, "/one")

    # A change signed with the new key: the bundled data plane applies it, the other cannot.
    add_route(new_cp, echo_upstream, "two")
    wait_served(bundled, "/two")
    state = clustering(bundled)
    assert (state["sync_status"], state["last_error"]) == ("normal", None)
    assert not serves(behind, "/two") and serves(behind, "/one")
    log = bundled.read_log()
    assert "config_agent.rejected" not in log
    # The re-signed version was built once, under the old key: its copy rebuilt nothing.
    assert applied_versions(log).count(version) == 1, log

    def listed() -> dict[str, Any] | None:
        rows = new_cp.api("GET", "/clustering/data-planes")[1]["data"]
        by_status = {row["sync_status"]: row for row in rows}
        if set(by_status) != {"normal", "config_rejected"}:
            return None
        # The nack sets the status; the reason comes with the next heartbeat (1 s here).
        return by_status if by_status["config_rejected"]["last_error"] else None

    rows = wait_for(listed, 15, "the control plane to list one data plane normal, one refusing")
    assert rows["config_rejected"]["last_error"] == "signature check failed: bad signature"


def write_pair(directory: Path, name: str, issued: certificates.Issued) -> tuple[str, str]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    certificates.write_pair(issued, cert, key)
    return str(cert), str(key)


def test_pki_control_plane_from_a_new_ca_reaches_data_planes_trusting_both(
    tmp_path: Path, postgres: PostgresDatabase, echo_upstream: EchoUpstream
) -> None:
    """PKI mode, the CA replaced: runbook steps 1 and 2 done, then step 4 with no write."""
    name = f"{postgres.name}_pki_rotation"
    dsn = create_database(postgres.server_dsn, name)
    certs = tmp_path / "pki"
    certs.mkdir()
    old_ca, new_ca = certificates.generate_ca(), certificates.generate_ca(common_name="zonegate cluster CA 2")
    old_ca_path, _ = write_pair(certs, "ca", old_ca)
    new_ca_path, _ = write_pair(certs, "ca2", new_ca)
    both = certs / "cas.pem"
    both.write_bytes(Path(old_ca_path).read_bytes() + Path(new_ca_path).read_bytes())
    server_cert, server_key = write_pair(
        certs, "server", certificates.issue_certificate(old_ca, role="server", name="nats")
    )
    cluster = HybridCluster(tmp_path, dsn)
    cluster.nats = NatsServer(
        tmp_path / "nats-pki",
        config_renderer=lambda port, http, store: nats_config.render(
            nats_config.NatsConfigOptions(
                mode="pki",
                cert_file=Path(server_cert),
                key_file=Path(server_key),
                ca_file=both,
                listen=f"127.0.0.1:{port}",
                store_dir=store,
                server_name="nats",
            )
        ),
    )
    common = {"cluster_mtls": "pki", "cluster_server_name": "nats"}

    def node(
        ca: certificates.Issued, role: certificates.IssuedRole, node_name: str, trusted: Path
    ) -> dict[str, str]:
        cert, key = write_pair(
            certs, node_name, certificates.issue_certificate(ca, role=role, name=node_name)
        )
        return common | {"cluster_cert": cert, "cluster_cert_key": key, "cluster_ca_cert": str(trusted)}

    try:
        cluster.bootstrap()
        cluster.start_nats()
        old_cp = cluster.add_control_plane(**node(old_ca, "control_plane", "cp-1", both))
        bundled = cluster.add_data_plane(**node(old_ca, "data_plane", "dp-1", both))
        behind = cluster.add_data_plane(**node(old_ca, "data_plane", "dp-2", Path(old_ca_path)))
        add_route(old_cp, echo_upstream, "one")
        for dp in (bundled, behind):
            wait_served(dp, "/one")
        version = clustering(bundled)["config_version"]
        old_cp.stop()
        new_cp = cluster.add_control_plane(**node(new_ca, "control_plane", "cp-2", both))
        wait_for(lambda: "publisher.resigning" in new_cp.read_log(), 20, "the CP to re-sign")

        def refused() -> bool:
            return clustering(behind)["sync_status"] == "config_rejected"

        wait_for(refused, 15, "the old-CA-only data plane to refuse the new CA's control plane")
        assert clustering(behind)["last_error"] == (
            "signature check failed: signer certificate is not issued by cluster_ca_cert"
        )
        add_route(new_cp, echo_upstream, "two")
        wait_served(bundled, "/two")
        assert serves(behind, "/one") and not serves(behind, "/two")
        log = bundled.read_log()
        assert "config_agent.rejected" not in log
        assert applied_versions(log).count(version) == 1, log
        assert "permissions violation" not in (new_cp.read_log() + log).lower()
    finally:
        cluster.stop()
        drop_database(postgres.server_dsn, name)
