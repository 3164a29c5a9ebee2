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
