"""Hub and region (leaf nodes, one JetStream domain each) and a two-server cluster, as rendered.

The server-to-server links carry the same guarantees as the client port: mutual TLS with the
cluster certificate (shared) or the CA (pki), and in pki mode only a ``--role server`` certificate
(SAN ``SERVER_IDENTITY``) may open one: a captured node certificate cannot join the bus as a leaf
node or a route, which would bypass every permission.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from typing import Any

from nats.js.api import StreamConfig

from bus.support import Pair, Pki, Rendered, connect, node_settings, server_logged
from harness import NatsServerFactory, free_port
from zonegate.bus import ratelimit_store, tls
from zonegate.bus.nats_config import Gateway, LeafRemote
from zonegate.bus.subjects import Names
from zonegate.embedded.nats_server import NatsServer

NAMES = Names("default")


def monitor(server: NatsServer | int, path: str) -> dict[str, Any]:
    port = server if isinstance(server, int) else server.monitoring_port
    assert port is not None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        document: dict[str, Any] = json.loads(connection.getresponse().read())
        return document
    finally:
        connection.close()


async def wait_until(predicate: Any, seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


def hub(factory: NatsServerFactory, mode: str, pair: Pair, ca: Pair | None) -> tuple[NatsServer, Rendered]:
    rendered = Rendered(
        mode,  # type: ignore[arg-type]
        pair,
        ca.cert if ca else None,
        extra=lambda r: {"js_domain": "hub", "leaf_listen": f"127.0.0.1:{r.port('leaf')}"},
        server_name="hub",
    )
    return factory(config_renderer=rendered, monitoring=True), rendered


def region(
    factory: NatsServerFactory, mode: str, pair: Pair, ca: Pair | None, hub_rendered: Rendered, name: str
) -> NatsServer:
    url = f"nats-leaf://127.0.0.1:{hub_rendered.ports['leaf']}"
    rendered = Rendered(
        mode,  # type: ignore[arg-type]
        pair,
        ca.cert if ca else None,
        extra=lambda _: (
            {"js_domain": name, "leaf_remotes": (LeafRemote(url),), "remote_js_domains": ("hub",)}
            if mode == "pki"
            else {"js_domain": name, "leaf_remotes": (LeafRemote(url),)}
        ),
        server_name=name,
    )
    return factory(config_renderer=rendered, monitoring=True)


async def test_shared_mode_region_reads_the_hub_over_a_leaf_link(
    nats_server_factory: NatsServerFactory, cluster_pair: Pair
) -> None:
    # The region dials the hub at 127.0.0.1 and nats-server checks that name in the hub's
    # certificate: the shared certificate carries the loopback SANs for this.
    hub_server, hub_rendered = hub(nats_server_factory, "shared", cluster_pair, None)
    region_server = region(nats_server_factory, "shared", cluster_pair, None, hub_rendered, "eu")
    assert await wait_until(lambda: len(monitor(hub_server, "/leafz").get("leafs") or []) == 1)
    context = tls.client_ssl_context(node_settings("shared", cluster_pair))
    on_hub = await connect(hub_server, context)
    in_region = await connect(region_server, context)
    try:
        hub_js = on_hub.client.jetstream(timeout=5)
        await hub_js.add_stream(StreamConfig(name=NAMES.config_stream, subjects=[NAMES.config_wildcard]))
        await hub_js.publish(NAMES.config_subject(), b"from the hub")
        remote_js = in_region.client.jetstream(domain="hub", timeout=5)
        assert (
            await remote_js.get_last_msg(NAMES.config_stream, NAMES.config_subject())
        ).data == b"from the hub"
    finally:
        await in_region.client.close()
        await on_hub.client.close()


async def test_pki_leaf_link_needs_a_server_certificate(
    nats_server_factory: NatsServerFactory, pki: Pki
) -> None:
    hub_server, hub_rendered = hub(nats_server_factory, "pki", pki.server, pki.ca)
    region_server = region(nats_server_factory, "pki", pki.server, pki.ca, hub_rendered, "eu")
    assert await wait_until(lambda: len(monitor(hub_server, "/leafz").get("leafs") or []) == 1)

    # A data plane in the region reads the hub's config stream through $JS.hub.API (--remote-js-domain).
    cp = await connect(
        hub_server, tls.client_ssl_context(node_settings("pki", pki.control_plane, pki.ca.cert))
    )
    dp = await connect(
        region_server, tls.client_ssl_context(node_settings("pki", pki.data_plane, pki.ca.cert))
    )
    try:
        cp_js = cp.client.jetstream(timeout=5)
        await cp_js.add_stream(StreamConfig(name=NAMES.config_stream, subjects=[NAMES.config_wildcard]))
        await cp_js.publish(NAMES.config_subject(), b"from the hub")
        dp_js = dp.client.jetstream(domain="hub", timeout=5)
        assert (await dp_js.get_last_msg(NAMES.config_stream, NAMES.config_subject())).data == b"from the hub"
        # Through the leaf link too, a data plane cannot write config.
        await dp.client.publish(NAMES.config_subject(), b"evil")
        await dp.client.flush()
        assert (await cp_js.stream_info(NAMES.config_stream)).state.messages == 1
    finally:
        await dp.client.close()
        await cp.client.close()

    # A rogue "region" dialling the hub with a data plane's certificate is refused.
    region(nats_server_factory, "pki", pki.data_plane, pki.ca, hub_rendered, "rogue")
    assert await server_logged(hub_server, "authentication error")
    assert len(monitor(hub_server, "/leafz").get("leafs") or []) == 1


async def test_pki_region_data_plane_counts_in_the_hubs_rate_limiting_bucket(
    nats_server_factory: NatsServerFactory, pki: Pki
) -> None:
    # Counters are global: the bucket is in the hub's domain only, and a region's data plane
    # writes to it as $JS.hub.API.$KV... ($KV.> does not cross a leaf link between domains).
    hub_server, hub_rendered = hub(nats_server_factory, "pki", pki.server, pki.ca)
    region_server = region(nats_server_factory, "pki", pki.server, pki.ca, hub_rendered, "eu")
    assert await wait_until(lambda: len(monitor(hub_server, "/leafz").get("leafs") or []) == 1)
    cp = await connect(
        hub_server, tls.client_ssl_context(node_settings("pki", pki.control_plane, pki.ca.cert))
    )
    dp_settings = node_settings("pki", pki.data_plane, pki.ca.cert)
    hub_dp = await connect(hub_server, tls.client_ssl_context(dp_settings))
    region_dp = await connect(region_server, tls.client_ssl_context(dp_settings))
    try:
        await ratelimit_store.ensure_ratelimit_bucket(cp.client.jetstream(timeout=5), NAMES)
        counter = ratelimit_store.Counter(key="plugin.minute.60.abc", limit=3, ttl=120)
        at_hub = (hub_dp.client.jetstream(timeout=5), ratelimit_store.ClusterCounters(NAMES))
        in_region = (
            region_dp.client.jetstream(domain="hub", timeout=5),
            ratelimit_store.ClusterCounters(NAMES, remote_domain="hub"),
        )
        taken = []
        for js, counters in (at_hub, in_region, at_hub, in_region):  # each write after the other's
            taken.append(await counters.take(js, [counter], ack_wait=2))
        assert [t.usage for t in taken] == [(0,), (1,), (2,), (3,)]
        assert [t.stop for t in taken] == [None, None, None, 0]  # 3 of 3: refused, not counted
        for connected in (hub_dp, region_dp):
            assert not [e for e in connected.errors if "permissions violation" in str(e).lower()]
    finally:
        for connected in (region_dp, hub_dp, cp):
            await connected.client.close()


async def test_pki_routes_need_a_server_certificate(nats_server_factory: NatsServerFactory, pki: Pki) -> None:
    cluster_ports = {"a": free_port(), "b": free_port()}
    routes = tuple(f"nats-route://127.0.0.1:{port}" for port in cluster_ports.values())

    def member(name: str, pair: Pair, port: int) -> Rendered:
        # Monitoring through the rendered config, not NatsServer's: NatsServer would wait for /healthz,
        # which a clustered JetStream answers only once a quorum of the cluster is up.
        rendered = Rendered(
            "pki",
            pair,
            pki.ca.cert,
            extra=lambda r: {
                "cluster_name": "zg",
                "cluster_listen": f"127.0.0.1:{port}",
                "routes": routes,
                "http": f"127.0.0.1:{r.port('http')}",
            },
            server_name=name,
        )
        nats_server_factory(config_renderer=rendered)
        return rendered

    a = member("a", pki.server, cluster_ports["a"])
    member("b", pki.server, cluster_ports["b"])
    a_http = a.ports["http"]

    def peers() -> set[str]:
        return {route["remote_name"] for route in monitor(a_http, "/routez").get("routes") or []}

    assert await wait_until(lambda: peers() == {"b"})
    # A third "server" with a data plane's certificate tries to join: refused.
    member("rogue", pki.data_plane, free_port())
    assert await server_logged(nats_server_factory.servers[0], "authentication error")
    assert peers() == {"b"}


async def test_pki_gateway_needs_a_server_certificate(
    nats_server_factory: NatsServerFactory, pki: Pki
) -> None:
    # nats-server's documentation says gateways discard verify_and_map; 2.15 maps it, against the
    # gateway's authorization user, and this test keeps it honest.
    gateway_ports: dict[str, int] = {}

    def cluster(name: str, pair: Pair, peers: dict[str, int]) -> Rendered:
        def extra(r: Rendered) -> dict[str, Any]:
            route_port = r.port("route")
            gateway_ports[name] = r.port("gateway")
            return {
                "cluster_name": name,
                "cluster_listen": f"127.0.0.1:{route_port}",
                "routes": (f"nats-route://127.0.0.1:{route_port}",),
                "gateway_listen": f"127.0.0.1:{gateway_ports[name]}",
                "gateways": tuple(
                    Gateway(peer, (f"tls://127.0.0.1:{port}",)) for peer, port in peers.items()
                ),
                "http": f"127.0.0.1:{r.port('http')}",
            }

        rendered = Rendered("pki", pair, pki.ca.cert, extra=extra, server_name=f"{name}-1")
        nats_server_factory(config_renderer=rendered)
        return rendered

    eu = cluster("eu", pki.server, {})
    cluster("us", pki.server, {"eu": gateway_ports["eu"]})

    def inbound() -> set[str]:
        return set(monitor(eu.ports["http"], "/gatewayz").get("inbound_gateways") or {})

    assert await wait_until(lambda: inbound() == {"us"})
    cluster("rogue", pki.data_plane, {"eu": gateway_ports["eu"]})
    assert await server_logged(nats_server_factory.servers[0], "authentication error")
    assert inbound() == {"us"}
