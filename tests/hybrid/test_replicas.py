"""``cluster_js_replicas`` end to end: a control plane on a three-server hub cluster (as region A
of deploy/compose.yaml) scales the streams an older control plane made with one replica, and the
config outlives the server that led the config stream: a change made after it stopped reaches a
data plane, and a brand-new data plane boots from the bus. On a hub that is not clustered the
setting costs a warning, never the config."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from harness.echo_upstream import EchoUpstream
from harness.fixtures import PostgresDatabase
from harness.hybrid import HybridCluster, wait_for
from harness.nats_cluster import NatsCluster
from zonegate.bus.subjects import Names
from zonegate.bus.tls import client_tls
from zonegate.embedded.postgres import create_database, drop_database
from zonegate.settings import load_settings

from .test_hybrid_outages import add_route, wait_served

pytestmark = pytest.mark.slow

NAMES = Names("default")
STREAMS = (NAMES.config_stream, NAMES.snapshot_object_stream, NAMES.ratelimit_stream)


@pytest.fixture
def hub(tmp_path: Path, postgres: PostgresDatabase) -> Iterator[tuple[HybridCluster, NatsCluster]]:
    name = f"{postgres.name}_replicas"
    dsn = create_database(postgres.server_dsn, name)
    cluster = HybridCluster(tmp_path, dsn)
    servers = NatsCluster(tmp_path / "hub", cluster.cert, cluster.key, js_domain="hub")
    try:
        cluster.bootstrap()
        servers.start()
        servers.wait_healthy()
        yield cluster, servers
    finally:
        cluster.stop()
        servers.stop()
        drop_database(postgres.server_dsn, name)


def placement(cluster: HybridCluster, servers: NatsCluster) -> dict[str, tuple[int, int, str | None]]:
    """Per stream: (replicas configured, followers caught up, leader)."""

    async def read() -> dict[str, tuple[int, int, str | None]]:
        tls = client_tls(load_settings(cluster.cluster_env()))
        running = [server.url for server in servers.servers if server.running]
        nc = await nats.connect(running, tls=tls.context, tls_hostname=tls.hostname, connect_timeout=3)
        try:
            js = nc.jetstream(timeout=3)
            found = {}
            for stream in STREAMS:
                info = await js.stream_info(stream)
                peers = (info.cluster.replicas or []) if info.cluster else []
                leader = info.cluster.leader if info.cluster else None
                found[stream] = (
                    int(info.config.num_replicas),
                    sum(1 for p in peers if p.current),
                    leader,
                )
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


def test_config_outlives_the_hub_server_that_led_its_stream(
    hub: tuple[HybridCluster, NatsCluster], echo_upstream: EchoUpstream
) -> None:
    cluster, servers = hub
    urls = ",".join(servers.urls)
    # A control plane of before the setting (one replica) makes the streams and publishes.
    old = cluster.add_control_plane(cluster_nats_url=urls, cluster_js_domain="hub")
    dp = cluster.add_data_plane(cluster_nats_url=urls, cluster_js_domain="hub")
    add_route(old, echo_upstream, "one")
    wait_served(dp, "/one")
    assert {replicas for replicas, _, _ in placement(cluster, servers).values()} == {1}
    old.stop()

    # Its successor asks for three: the existing streams are scaled in place, at start-up.
    cp = cluster.add_control_plane(cluster_nats_url=urls, cluster_js_domain="hub", cluster_js_replicas="3")
    placed = wait_for(
        lambda: (
            (found := placement(cluster, servers))
            and all(
                replicas == 3 and followers == 2 and leader for replicas, followers, leader in found.values()
            )
            and found
        ),
        20,
        "every stream on three servers",
        interval=0.3,
    )
    leader = placed[NAMES.config_stream][2]
    servers.by_name(leader).stop()

    add_route(cp, echo_upstream, "two")
    wait_served(dp, "/two", timeout=30)
    fresh = cluster.add_data_plane(cluster_nats_url=urls, cluster_js_domain="hub")
    wait_served(fresh, "/two")
    assert placement(cluster, servers)[NAMES.config_stream][2] not in (None, leader)


def test_a_hub_that_is_not_clustered_still_gets_config_with_replicas_asked_for(
    cluster: HybridCluster, echo_upstream: EchoUpstream
) -> None:
    # One nats-server, not clustered: three replicas cannot be had; the control plane says so and
    # publishes on one, at start-up and after a restart (the streams then exist with one).
    cp = cluster.add_control_plane(cluster_js_replicas="3")
    dp = cluster.add_data_plane()
    add_route(cp, echo_upstream, "one")
    wait_served(dp, "/one")
    assert "bus.stream_replicas_unsupported" in cp.read_log()
    cp.stop()
    cp.start()
    add_route(cp, echo_upstream, "two")
    wait_served(dp, "/two")
    assert "bus.stream_replicas_unchanged" in cp.read_log()
    assert "publisher.step_down" not in cp.read_log()
