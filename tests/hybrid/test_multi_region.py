"""Two regions: a hub and a region with their own JetStream domains over a leaf link that we cut.

The hub runs the CP (and a DP); the region's nats-server is a leaf node of the hub with its own
JetStream domain, where the CP keeps a mirror of the config stream. A region DP reads only its
region's copy, so it boots and serves while the link is down, and catches up when it heals.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.echo_upstream import EchoUpstream
from harness.fixtures import PostgresDatabase
from harness.hybrid import HybridCluster
from harness.link import Link
from zonegate.bus import nats_config
from zonegate.embedded.nats_server import NatsServer
from zonegate.embedded.ports import free_port
from zonegate.embedded.postgres import create_database, drop_database

from .test_hybrid_e2e import proxied_status
from .test_hybrid_outages import add_route, wait_served

pytestmark = pytest.mark.slow


def _no_advertise(config: str) -> str:
    return config.replace("leafnodes {\n", "leafnodes {\n  no_advertise: true\n", 1)


class Regions:
    def __init__(self, cluster: HybridCluster) -> None:
        self.cluster = cluster
        self.hub_leaf_port = free_port()
        cert, key = cluster.cert, cluster.key
        self.hub = NatsServer(
            cluster.base / "nats-hub",
            # no_advertise: else the hub tells the region its real leaf port, and the region
            # redials that one, around the link we cut.
            config_renderer=lambda port, http, store: _no_advertise(
                nats_config.render(
                    nats_config.NatsConfigOptions(
                        mode="shared",
                        cert_file=cert,
                        key_file=key,
                        listen=f"127.0.0.1:{port}",
                        store_dir=store,
                        server_name="hub",
                        js_domain="hub",
                        leaf_listen=f"127.0.0.1:{self.hub_leaf_port}",
                    )
                )
            ),
        )
        self.hub.start()
        self.link = Link(self.hub_leaf_port)
        self.region = NatsServer(
            cluster.base / "nats-region",
            config_renderer=lambda port, http, store: nats_config.render(
                nats_config.NatsConfigOptions(
                    mode="shared",
                    cert_file=cert,
                    key_file=key,
                    listen=f"127.0.0.1:{port}",
                    store_dir=store,
                    server_name="region",
                    js_domain="region",
                    leaf_remotes=(nats_config.LeafRemote(f"nats-leaf://{self.link.url_host_port}"),),
                )
            ),
        )
        self.region.start()

    def stop(self) -> None:
        self.region.stop()
        self.link.close()
        self.hub.stop()


@pytest.fixture
def regions(tmp_path: Path, postgres: PostgresDatabase) -> Iterator[Regions]:
    name = f"{postgres.name}_regions"
    dsn = create_database(postgres.server_dsn, name)
    cluster = HybridCluster(tmp_path, dsn)
    cluster.bootstrap()
    setup = Regions(cluster)
    try:
        yield setup
    finally:
        cluster.stop()
        setup.stop()
        drop_database(postgres.server_dsn, name)


def test_a_region_keeps_booting_from_its_own_copy_while_cut_off(
    regions: Regions, echo_upstream: EchoUpstream
) -> None:
    cluster = regions.cluster
    hub_url, region_url = regions.hub.url, regions.region.url
    cp = cluster.add_control_plane(
        cluster_nats_url=hub_url, cluster_js_domain="hub", cluster_region_domains="region"
    )
    hub_dp = cluster.add_data_plane(cluster_nats_url=hub_url, cluster_js_domain="hub", labels="region:hub")
    region_dp = cluster.add_data_plane(
        cluster_nats_url=region_url, cluster_js_domain="region", labels="region:eu"
    )
    add_route(cp, echo_upstream, "one")
    for node in (hub_dp, region_dp):
        wait_served(node, "/one")

    regions.link.cut()
    add_route(cp, echo_upstream, "two")
    wait_served(hub_dp, "/two")
    time.sleep(1.0)
    assert proxied_status(region_dp, "/two") == 404  # cut off: the region has not heard of it
    # A brand-new DP in the region boots from the region's copy, with the hub out of reach.
    fresh = cluster.add_data_plane(cluster_nats_url=region_url, cluster_js_domain="region")
    wait_served(fresh, "/one")
    assert proxied_status(fresh, "/two") == 404

    regions.link.heal()
    for node in (region_dp, fresh):
        wait_served(node, "/two", timeout=40)
    hashes = {node.status()["configuration_hash"] for node in (hub_dp, region_dp, fresh)}
    assert len(hashes) == 1
