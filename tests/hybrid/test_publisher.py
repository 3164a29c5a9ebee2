"""The control plane publishes signed snapshots into the config stream (real CP, NATS, PostgreSQL)."""

from __future__ import annotations

import asyncio

import nats

from harness.hybrid import HybridCluster, wait_for
from zonegate.bus import config_stream, snapshot
from zonegate.bus.signing import Verifier
from zonegate.bus.subjects import Names
from zonegate.bus.tls import client_tls
from zonegate.settings import load_settings

NAMES = Names("default")


async def latest(cluster: HybridCluster) -> snapshot.OpenedSnapshot | None:
    settings = load_settings(cluster.cluster_env())
    tls = client_tls(settings)
    nc = await nats.connect(cluster.nats.url, tls=tls.context, tls_hostname=tls.hostname)
    try:
        stored = await config_stream.read_latest(nc.jetstream(), NAMES, "default")
    finally:
        await nc.close()
    if stored is None:
        return None
    return snapshot.open_message(
        stored.data, Verifier.shared(cluster.cert), cluster="default", group="default"
    )


def test_a_write_is_published_as_a_signed_snapshot(cluster: HybridCluster) -> None:
    cp = cluster.add_control_plane()
    status, body = cp.api("POST", "/services", {"name": "orders", "url": "http://127.0.0.1:9/orders"})
    assert status == 201, body

    def published() -> snapshot.OpenedSnapshot | None:
        opened = asyncio.run(latest(cluster))
        return opened if opened is not None and opened.version >= 1 else None

    opened = wait_for(published, 15, "a published snapshot")
    config = snapshot.decode_payload(opened, opened.inline_payload)
    assert [s["name"] for s in config.of("services")] == ["orders"]
    assert opened.header.signer  # the publishing node says who it is


async def last_sequence(cluster: HybridCluster) -> int:
    settings = load_settings(cluster.cluster_env())
    tls = client_tls(settings)
    nc = await nats.connect(cluster.nats.url, tls=tls.context, tls_hostname=tls.hostname)
    try:
        return await config_stream.last_sequence(nc.jetstream(), NAMES)
    finally:
        await nc.close()


def test_a_control_plane_restarted_with_the_same_key_publishes_nothing(cluster: HybridCluster) -> None:
    """Re-signing is for a changed key only (tests/hybrid/test_certificate_rotation.py)."""
    cp = cluster.add_control_plane()
    status, body = cp.api("POST", "/services", {"name": "orders", "url": "http://127.0.0.1:9/orders"})
    assert status == 201, body
    wait_for(lambda: (opened := asyncio.run(latest(cluster))) and opened.version >= 1, 15, "a snapshot")
    before = asyncio.run(last_sequence(cluster))
    cp.stop()
    cp.start()

    def bus_states() -> list[str]:
        return [line for line in cp.read_log().splitlines() if "publisher.bus_state" in line]

    # The first start found an empty bus; the restart reads back its own snapshot.
    states = wait_for(bus_states, 15, "the restarted CP to read the bus")
    assert "signed_with_another_key=False" in states[-1] or '"signed_with_another_key": false' in states[-1]
    assert "publisher.resigning" not in cp.read_log()
    assert asyncio.run(last_sequence(cluster)) == before
