"""Two regions: a hub and a region with their own JetStream domains over a leaf link that we cut.

The hub runs the CP (and a DP); the region's nats-server is a leaf node of the hub with its own
JetStream domain, where the CP keeps a mirror of the config stream. A region DP reads only its
region's copy, so it boots and serves while the link is down, and catches up when it heals. A
region cut off when the CP starts leading gets its copy once the link heals, with no config
change. Rate-limiting's cluster counters are global: a region DP counts in the hub's bucket.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from data_plane.test_proxy_e2e import request
from harness.echo_upstream import EchoUpstream
from harness.fixtures import PostgresDatabase
from harness.hybrid import HybridCluster, wait_for
from harness.link import Link
from plugins.test_rate_limiting import away_from_the_minute_edge
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


def test_a_region_out_of_reach_when_the_leader_starts_gets_its_copy_once_the_link_heals(
    regions: Regions, echo_upstream: EchoUpstream
) -> None:
    cluster = regions.cluster
    hub_url, region_url = regions.hub.url, regions.region.url
    regions.link.cut()  # before the control plane ever leads: its first mirror attempt fails
    cp = cluster.add_control_plane(
        cluster_nats_url=hub_url, cluster_js_domain="hub", cluster_region_domains="region"
    )
    hub_dp = cluster.add_data_plane(cluster_nats_url=hub_url, cluster_js_domain="hub")
    region_dp = cluster.add_data_plane(cluster_nats_url=region_url, cluster_js_domain="region")
    add_route(cp, echo_upstream, "one")  # publishing does not wait for the region
    wait_served(hub_dp, "/one")
    wait_for(lambda: "bus.region_mirror_unavailable" in cp.read_log(), 10, "a failed mirror attempt")
    assert proxied_status(region_dp, "/one") != 200

    # No config change from here on: the leader's retries alone bring the region its copy.
    regions.link.heal()
    wait_served(region_dp, "/one", timeout=45)
    assert "bus.region_mirror_created" in cp.read_log()
    assert region_dp.status()["configuration_hash"] == hub_dp.status()["configuration_hash"]


def test_cluster_rate_limiting_counts_once_across_regions(
    regions: Regions, echo_upstream: EchoUpstream
) -> None:
    """A region's data plane counts in the hub's bucket (``cluster_hub_js_domain``) through the
    leaf link, so one limit holds across regions, as Kong's database-backed ``cluster`` policy
    does; with the link cut it counts locally (``fault_tolerant``) or answers 500."""
    cluster = regions.cluster
    hub_url, region_url = regions.hub.url, regions.region.url
    cp = cluster.add_control_plane(
        cluster_nats_url=hub_url, cluster_js_domain="hub", cluster_region_domains="region"
    )
    hub_dp = cluster.add_data_plane(cluster_nats_url=hub_url, cluster_js_domain="hub")
    region_dp = cluster.add_data_plane(
        cluster_nats_url=region_url, cluster_js_domain="region", cluster_hub_js_domain="hub"
    )
    assert cp.api("POST", "/services", {"name": "echo", "url": echo_upstream.url})[0] == 201
    limits = {
        "shared": {"minute": 5, "policy": "cluster", "limit_by": "ip"},
        "spare": {"minute": 3, "policy": "cluster", "limit_by": "ip"},
        "strict": {"hour": 1000, "policy": "cluster", "fault_tolerant": False},
    }
    for name, config in limits.items():
        assert cp.api("POST", "/services/echo/routes", {"name": name, "paths": [f"/{name}"]})[0] == 201
        plugin = {"name": "rate-limiting", "config": config}
        assert cp.api("POST", f"/routes/{name}/plugins", plugin)[0] == 201
    for node in (hub_dp, region_dp):
        # /strict answers 200 once the whole config is there and the node's counters answer.
        wait_for(
            lambda node=node: request(node, "GET", "/strict")[0] == 200,
            20,
            f"{node.proxy_url} to count /strict on the bus",
        )

    away_from_the_minute_edge()
    answers = [request((hub_dp, region_dp)[i % 2], "GET", "/shared") for i in range(7)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 200, 200, 429, 429]
    assert [h["x-ratelimit-remaining-minute"] for _, h, _ in answers] == ["4", "3", "2", "1", "0", "0", "0"]

    # The link is cut: the region cannot reach the counters. fault_tolerant counts locally, from
    # zero; without it, Kong's 500. The hub keeps counting on the bus.
    regions.link.cut()
    _, _, body = wait_for(
        lambda: (answer := request(region_dp, "GET", "/strict"))[0] == 500 and answer, 10, "a 500"
    )
    assert json.loads(body)["message"] == "An unexpected error occurred"
    local = [request(region_dp, "GET", "/spare") for _ in range(4)]
    assert [status for status, _, _ in local] == [200, 200, 200, 429]
    assert [h["x-ratelimit-remaining-minute"] for _, h, _ in local] == ["2", "1", "0", "0"]
    assert request(hub_dp, "GET", "/spare")[0] == 200  # the hub's count is apart from the region's
