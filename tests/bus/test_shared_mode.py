"""Shared mode against a real nats-server running ``zonegate nats config --mode shared``.

The cluster certificate (``zonegate hybrid gen-cert``) is the server's certificate, every client's
certificate and the only trust anchor on both sides.
"""

from __future__ import annotations

import ssl

from nats.js.api import StreamConfig

from bus.support import Pair, Rendered, connect, node_settings, refused, server_logged, write
from harness import NatsServerFactory
from zonegate.bus import certificates, tls
from zonegate.bus.subjects import Names

NAMES = Names("default")


def context_presenting(client: Pair, trusted: Pair) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(trusted.cert))
    context.load_cert_chain(str(client.cert), str(client.key))
    return context


async def test_cluster_certificate_connects_and_round_trips_through_jetstream(
    nats_server_factory: NatsServerFactory, cluster_pair: Pair
) -> None:
    server = nats_server_factory(config_renderer=Rendered("shared", cluster_pair))
    settings = node_settings("shared", cluster_pair)
    client_tls = tls.client_tls(settings)
    assert client_tls.hostname is None and not client_tls.context.check_hostname
    connected = await connect(server, **client_tls.connect_options())
    try:
        js = connected.client.jetstream(timeout=5)
        await js.add_stream(
            StreamConfig(name=NAMES.config_stream, subjects=[NAMES.config_wildcard], max_msgs_per_subject=10)
        )
        ack = await js.publish(NAMES.config_subject(), b"snapshot")
        assert ack.stream == NAMES.config_stream
        assert (await js.get_last_msg(NAMES.config_stream, NAMES.config_subject())).data == b"snapshot"
    finally:
        await connected.client.close()


async def test_clients_without_the_cluster_certificate_are_refused(
    nats_server_factory: NatsServerFactory, cluster_pair: Pair
) -> None:
    server = nats_server_factory(config_renderer=Rendered("shared", cluster_pair))
    # No client certificate at all.
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.load_verify_locations(cafile=str(cluster_pair.cert))
    assert await refused(server, bare)
    assert await server_logged(server, "client didn't provide a certificate")
    # Another self-signed P-384 certificate, made the same way: not the pinned one.
    other = write(certificates.generate_cluster_certificate(), cluster_pair.cert.parent, "other-cluster")
    assert await refused(server, context_presenting(other, trusted=cluster_pair))
    assert await server_logged(server, "certificate signed by unknown authority")


async def test_node_refuses_a_server_with_another_cluster_certificate(
    nats_server_factory: NatsServerFactory, cluster_pair: Pair
) -> None:
    # The pinning works both ways: a look-alike bus (same CN, same SANs) gets no node.
    impostor_pair = write(certificates.generate_cluster_certificate(), cluster_pair.cert.parent, "impostor")
    impostor = nats_server_factory(config_renderer=Rendered("shared", impostor_pair))
    assert await refused(impostor, tls.client_ssl_context(node_settings("shared", cluster_pair)))
