"""``cluster_js_replicas`` at the bus level: the hub's config stream, snapshot store and
rate-limiting counters on a real three-server JetStream cluster, scaled in place when they exist
with another count, and still served when the server leading them stops; on a server that is
not clustered, a count above one costs a warning, never a failure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from bus.support import Pair, Rendered, node_settings
from harness import NatsServerFactory
from harness.nats_cluster import NatsCluster
from zonegate.bus import config_stream, ratelimit_store, tls
from zonegate.bus.subjects import Names

NAMES = Names("default")
STREAMS = (NAMES.config_stream, NAMES.snapshot_object_stream, NAMES.ratelimit_stream)


@pytest.fixture
def hub_cluster(tmp_path: Path, cluster_pair: Pair) -> Iterator[NatsCluster]:
    servers = NatsCluster(tmp_path / "hub", cluster_pair.cert, cluster_pair.key)
    try:
        servers.start()
        servers.wait_healthy()
        yield servers
    finally:
        servers.stop()


async def connect(urls: list[str], pair: Pair) -> Client:
    client: Client = await nats.connect(
        urls,
        tls=tls.client_ssl_context(node_settings("shared", pair)),
        connect_timeout=5,
        reconnect_time_wait=0.2,
        max_reconnect_attempts=-1,
    )
    return client


async def replicas(js: object, stream: str) -> tuple[int, int, str | None]:
    """(configured replicas, followers, leader) of ``stream``."""
    info = await js.stream_info(stream)  # type: ignore[attr-defined]
    cluster = info.cluster
    followers = len(cluster.replicas or []) if cluster is not None else 0
    return int(info.config.num_replicas), followers, cluster.leader if cluster is not None else None


async def test_the_hub_streams_get_their_replicas_and_outlive_the_server_leading_them(
    hub_cluster: NatsCluster, cluster_pair: Pair
) -> None:
    client = await connect(hub_cluster.urls, cluster_pair)
    try:
        js = client.jetstream(timeout=5)
        # A stream an older control plane made with one replica is scaled in place, data kept.
        await config_stream.ensure_config_stream(js, NAMES, history=5)
        assert (await replicas(js, NAMES.config_stream))[:2] == (1, 0)
        first = await config_stream.publish_snapshot(js, NAMES, "default", b"one", msg_id="1")
        await config_stream.ensure_config_stream(js, NAMES, history=5, replicas=3)
        await config_stream.ensure_snapshot_bucket(js, NAMES, replicas=3)
        await ratelimit_store.ensure_ratelimit_bucket(js, NAMES, replicas=3)
        for stream in STREAMS:
            count, followers, leader = await replicas(js, stream)
            assert (count, followers) == (3, 2), stream
            assert leader is not None, stream
        stored = await config_stream.read_latest(js, NAMES, "default")
        assert stored is not None and (stored.sequence, stored.data) == (first, b"one")
        # Asking again changes nothing (no update, no new leader election).
        await config_stream.ensure_config_stream(js, NAMES, history=5, replicas=3)

        # The server leading the config stream stops: the config stays readable and writable.
        leader = (await replicas(js, NAMES.config_stream))[2]
        assert leader is not None
        hub_cluster.by_name(leader).stop()
        stored, second = None, 0
        deadline = time.monotonic() + 30  # a new leader within seconds; the client reconnects
        while time.monotonic() < deadline:
            try:
                stored = await config_stream.read_latest(js, NAMES, "default")
                second = await config_stream.publish_snapshot(js, NAMES, "default", b"two", msg_id="2")
                break
            except (TimeoutError, nats.errors.Error):
                await asyncio.sleep(0.2)
        assert stored is not None and stored.data == b"one" and second > first
        latest = await config_stream.read_latest(js, NAMES, "default")
        assert latest is not None and (latest.sequence, latest.data) == (second, b"two")
        _, _, new_leader = await replicas(js, NAMES.config_stream)
        assert new_leader not in (None, leader)
    finally:
        await client.close()


async def test_a_server_that_is_not_clustered_keeps_one_replica_without_failing(
    nats_server_factory: NatsServerFactory, cluster_pair: Pair
) -> None:
    server = nats_server_factory(config_renderer=Rendered("shared", cluster_pair))
    client = await connect([server.url], cluster_pair)
    try:
        js = client.jetstream(timeout=5)
        await config_stream.ensure_config_stream(js, NAMES, history=5)  # exists with one replica
        await config_stream.ensure_config_stream(js, NAMES, history=5, replicas=3)  # refused: kept
        await config_stream.ensure_snapshot_bucket(js, NAMES, replicas=3)  # created with one
        await ratelimit_store.ensure_ratelimit_bucket(js, NAMES, replicas=3)  # created with one
        for stream in STREAMS:
            assert (await replicas(js, stream))[0] == 1, stream
        sequence = await config_stream.publish_snapshot(js, NAMES, "default", b"one", msg_id="1")
        stored = await config_stream.read_latest(js, NAMES, "default")
        assert stored is not None and stored.sequence == sequence
    finally:
        await client.close()
