"""Hybrid mode when things fail: CP, NATS or signatures. Real processes throughout."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from typing import Any

import lmdb
import nats
import pytest

from harness.echo_upstream import EchoUpstream
from harness.hybrid import ControlPlaneProcess, HybridCluster, wait_for
from harness.zonegate_node import ZonegateNode
from zonegate.bus import config_stream, snapshot
from zonegate.bus.signing import Signer
from zonegate.bus.subjects import Names
from zonegate.bus.tls import client_tls
from zonegate.bus.v1 import bus_pb2
from zonegate.core import declarative
from zonegate.data_plane.cache_cipher import MAGIC
from zonegate.data_plane.lmdb_cache import KEY_CONFIG
from zonegate.embedded.ports import free_port
from zonegate.settings import load_settings

from .test_hybrid_e2e import proxied_status, serves

pytestmark = pytest.mark.slow

NAMES = Names("default")


def add_route(cp: ControlPlaneProcess, upstream: EchoUpstream, name: str) -> None:
    status, body = cp.api("PUT", f"/services/{name}", {"url": upstream.url})
    assert status in (200, 201), body
    status, body = cp.api("PUT", f"/services/{name}/routes/{name}", {"paths": [f"/{name}"]})
    assert status in (200, 201), body


def stored_config(node: ZonegateNode) -> bytes:
    env = lmdb.open(str(node.prefix / "dbless.lmdb"), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return bytes(txn.get(KEY_CONFIG) or b"")
    finally:
        env.close()


def wait_served(node: ZonegateNode, path: str, timeout: float = 20) -> None:
    wait_for(lambda: serves(node, path), timeout, f"{node.proxy_url} to serve {path}")


def test_data_planes_outlive_the_control_plane(cluster: HybridCluster, echo_upstream: EchoUpstream) -> None:
    cp = cluster.add_control_plane()
    dp = cluster.add_data_plane(data_plane_cache_encryption="on")
    add_route(cp, echo_upstream, "one")
    wait_served(dp, "/one")
    cp.kill()
    # The CP is gone: the DP keeps serving, and a restarted DP comes back from its LMDB cache
    # (encrypted: nothing of the config is readable in the file).
    assert serves(dp, "/one")
    dp.stop()
    assert stored_config(dp).startswith(MAGIC)
    dp.start()
    assert serves(dp, "/one")
    # A brand-new DP boots from the snapshot the bus retains, with no CP at all.
    fresh = cluster.add_data_plane()
    wait_served(fresh, "/one")
    # A CP comes back; a change made now reaches every DP.
    cp.start()
    add_route(cp, echo_upstream, "two")
    for node in (dp, fresh):
        wait_served(node, "/two")


def test_data_planes_reconnect_after_nats_restarts(
    cluster: HybridCluster, echo_upstream: EchoUpstream
) -> None:
    cp = cluster.add_control_plane()
    dp = cluster.add_data_plane()
    add_route(cp, echo_upstream, "one")
    wait_served(dp, "/one")
    cluster.nats.kill()
    assert serves(dp, "/one")
    # While it lasts, the outage is what the DP reports (UnexpectedEOF, refused reconnects, ...).
    wait_for(lambda: dp.status()["clustering"]["last_error"], 15, "the DP to report the lost bus")
    add_route(cp, echo_upstream, "two")  # made while the bus is down: published when it is back
    cluster.nats.restart()
    wait_served(dp, "/two", timeout=30)
    # Reconnected: the connection error is gone, on the DP and on the CP's list.
    wait_for(lambda: dp.status()["clustering"]["last_error"] is None, 15, "the DP's error to clear")
    assert dp.status()["clustering"]["bus_reconnects"] >= 1

    def listed_clean() -> bool:
        rows = cp.api("GET", "/clustering/data-planes")[1]["data"]
        return len(rows) == 1 and rows[0]["last_error"] is None and rows[0]["sync_status"] == "normal"

    wait_for(listed_clean, 15, "the CP to list the DP with no error")
    add_route(cp, echo_upstream, "three")
    wait_served(dp, "/three")


def test_a_copied_cache_boots_a_data_plane_with_no_bus(
    cluster: HybridCluster, echo_upstream: EchoUpstream
) -> None:
    cp = cluster.add_control_plane()
    dp = cluster.add_data_plane()
    add_route(cp, echo_upstream, "one")
    wait_served(dp, "/one")
    dp.stop()
    copy = cluster.add_data_plane(start=False, cluster_nats_url=f"tls://127.0.0.1:{free_port()}")
    shutil.copytree(dp.prefix / "dbless.lmdb", copy.prefix / "dbless.lmdb")
    copy.start()
    assert serves(copy, "/one")
    assert copy.status()["configuration_hash"] != "0" * 32


async def publish_raw(cluster: HybridCluster, data: bytes) -> None:
    tls = client_tls(load_settings(cluster.cluster_env()))
    nc = await nats.connect(cluster.nats.url, tls=tls.context, tls_hostname=tls.hostname)
    try:
        await config_stream.publish_snapshot(nc.jetstream(), NAMES, "default", data, msg_id=uuid.uuid4().hex)
    finally:
        await nc.close()


def forged(cluster: HybridCluster, signer: Signer, *, version: int, **header_changes: Any) -> bytes:
    config = declarative.loads('_format_version: "3.0"\nservices: [{name: evil, url: "http://10.0.0.1"}]\n')
    encoded = snapshot.encode(
        config,
        version=version,
        cluster="default",
        group="default",
        signer=signer,
        signer_node="test",
        plugin_versions={},
        inline_limit=1 << 20,
        bucket=NAMES.snapshot_bucket,
    )
    signed = bus_pb2.SignedSnapshot.FromString(encoded.message)
    if header_changes:
        header = bus_pb2.SnapshotHeader.FromString(signed.header)
        for name, value in header_changes.items():
            setattr(header, name, value)
        signed.header = header.SerializeToString()
        signed.signature = signer.sign(signed.header)
    return signed.SerializeToString()


def rejection(cp: ControlPlaneProcess, version: int) -> dict[str, Any] | None:
    status, body = cp.api("GET", "/clustering/data-planes")
    assert status == 200
    for row in body["data"]:
        rejected = row.get("config_rejected")
        if rejected and rejected["version"] == version:
            return dict(row)
    return None


def test_bad_snapshots_are_refused_and_reported(
    cluster: HybridCluster, echo_upstream: EchoUpstream, tmp_path: Any
) -> None:
    from zonegate.bus.certificates import generate_cluster_certificate

    cp = cluster.add_control_plane()
    dp = cluster.add_data_plane()
    add_route(cp, echo_upstream, "one")
    wait_served(dp, "/one")
    serving = dp.status()["configuration_hash"]
    cluster_signer = Signer.from_files(cluster.cert, cluster.key, include_certificate=False)
    intruder = generate_cluster_certificate()
    (tmp_path / "i.crt").write_bytes(intruder.cert_pem())
    (tmp_path / "i.key").write_bytes(intruder.key_pem())
    intruder_signer = Signer.from_files(tmp_path / "i.crt", tmp_path / "i.key", include_certificate=False)

    # A newer major version (signed correctly): refused as Kong's kong_version_incompatible.
    asyncio.run(
        publish_raw(cluster, forged(cluster, cluster_signer, version=1000, zonegate_version="99.0.0"))
    )
    row = wait_for(lambda: rejection(cp, 1000), 15, "the CP to show the refusal")
    assert row["sync_status"] == "kong_version_incompatible"
    assert "99.0.0" in row["config_rejected"]["reason"]
    # A truncated payload (the header promises more bytes than arrive).
    asyncio.run(publish_raw(cluster, forged(cluster, cluster_signer, version=1001, payload_size=10**6)))
    row = wait_for(lambda: rejection(cp, 1001), 15, "the truncated snapshot's refusal")
    assert row["sync_status"] == "config_rejected" and "truncated" in row["config_rejected"]["reason"]
    # A snapshot signed by a key that is not the cluster's: refused, and the DP says so in its log.
    asyncio.run(publish_raw(cluster, forged(cluster, intruder_signer, version=1002)))
    wait_for(lambda: "bad signature" in dp.read_log(), 15, "the signature refusal")
    # Through all of it, the good config kept serving.
    assert serves(dp, "/one") and proxied_status(dp, "/evil") == 404
    assert dp.status()["configuration_hash"] == serving
    # And the next real change still lands.
    add_route(cp, echo_upstream, "two")
    wait_served(dp, "/two")


def test_a_snapshot_over_one_mebibyte_goes_through_the_object_store(
    cluster: HybridCluster, echo_upstream: EchoUpstream
) -> None:
    cp = cluster.add_control_plane()
    dp = cluster.add_data_plane()
    routes = [
        {"name": f"r{i}", "paths": [f"/r{i}"], "tags": [uuid.uuid4().hex, uuid.uuid4().hex]}
        for i in range(20_000)
    ]
    document = {
        "_format_version": "3.0",
        "services": [{"name": "big", "url": echo_upstream.url, "routes": routes}],
    }
    status, body = cp.api("POST", "/config", document)
    assert status in (200, 201), body
    wait_for(lambda: serves(dp, "/r19999"), 90, "the large config on the DP")
    assert '"object_store": true' in cp.read_log() or "object_store=True" in cp.read_log()
    assert serves(dp, "/r0")


def test_another_control_plane_takes_over_publishing(
    cluster: HybridCluster, echo_upstream: EchoUpstream
) -> None:
    first = cluster.add_control_plane()
    wait_for(lambda: "publisher.leading" in first.read_log(), 15, "the first CP to lead")
    second = cluster.add_control_plane()
    dp = cluster.add_data_plane()
    add_route(second, echo_upstream, "one")  # written through the follower, published by the leader
    wait_served(dp, "/one")
    first.kill()
    started = time.monotonic()
    add_route(second, echo_upstream, "two")
    wait_served(dp, "/two", timeout=20)
    assert time.monotonic() - started < 15
    assert "publisher.leading" in second.read_log()


def test_a_corrupt_cache_is_moved_aside_and_reported(
    cluster: HybridCluster, echo_upstream: EchoUpstream
) -> None:
    cp = cluster.add_control_plane()
    dp = cluster.add_data_plane()
    add_route(cp, echo_upstream, "one")
    wait_served(dp, "/one")
    dp.stop()
    env = lmdb.open(str(dp.prefix / "dbless.lmdb"))
    with env.begin(write=True) as txn:
        txn.put(KEY_CONFIG, b"\x00 not a config")
    env.close()
    dp.start()
    wait_served(dp, "/one")  # from the bus, since the cache could not be read

    def reported() -> bool:
        rows = cp.api("GET", "/clustering/data-planes")[1]["data"]
        return any("moved aside" in (row["last_error"] or "") for row in rows)

    wait_for(reported, 15, "the CP to show the cache problem")
    assert list(dp.prefix.glob("dbless.lmdb.corrupt-*"))
