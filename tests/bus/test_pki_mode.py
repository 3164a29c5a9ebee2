"""PKI mode against a real nats-server running the config ``zonegate nats config --mode pki`` renders.

One server per test: the control plane creates the config stream and the snapshot object store and
publishes; the data plane reads both the way the config agent will (``get_last_msg``, an ordered
consumer, ``ObjectStore.get``), reports on its own subjects, and cannot write config, touch the
object store or change a stream. Certificates without a role identity, or from another CA, get in
nowhere.
"""

from __future__ import annotations

import asyncio
import json
import os

import nats.errors
import pytest
from nats.js.api import DeliverPolicy, StreamConfig

from bus.support import Connected, Pki, Rendered, connect, node_settings, refused, server_logged
from harness import NatsServerFactory
from zonegate.bus import ratelimit_store, tls
from zonegate.bus.subjects import CP_QUEUE_GROUP, Names
from zonegate.embedded.nats_server import NatsServer
from zonegate.embedded.tls_material import client_ssl_context

NAMES = Names("default")
SNAPSHOT = b"snapshot v1 from the control plane"
BIG = os.urandom(1024 * 1024 + 300 * 1024)  # above the 1 MiB max_payload: only the object store takes it


def start(factory: NatsServerFactory, pki: Pki) -> NatsServer:
    return factory(config_renderer=Rendered("pki", pki.server, pki.ca.cert), monitoring=True)


async def as_control_plane(server: NatsServer, pki: Pki) -> Connected:
    # cluster_server_name: the name checked in the server certificate (the URL says 127.0.0.1).
    settings = node_settings("pki", pki.control_plane, pki.ca.cert, cluster_server_name="localhost")
    client_tls = tls.client_tls(settings)
    assert client_tls.hostname == "localhost"
    return await connect(server, **client_tls.connect_options())


async def as_data_plane(server: NatsServer, pki: Pki) -> Connected:
    settings = node_settings("pki", pki.data_plane, pki.ca.cert)
    return await connect(server, tls.client_ssl_context(settings), tls_hostname=tls.tls_hostname(settings))


async def publish_config(cp: Connected) -> None:
    js = cp.client.jetstream(timeout=5)
    await js.add_stream(
        StreamConfig(
            name=NAMES.config_stream,
            subjects=[NAMES.config_wildcard],
            max_msgs_per_subject=10,
            allow_direct=True,
        )
    )
    await js.publish(NAMES.config_subject(), SNAPSHOT)
    store = await js.create_object_store(NAMES.snapshot_bucket)
    await store.put("snapshot-1", BIG)


async def test_control_plane_publishes_and_data_plane_reads(
    nats_server_factory: NatsServerFactory, pki: Pki
) -> None:
    server = start(nats_server_factory, pki)
    cp = await as_control_plane(server, pki)
    dp = await as_data_plane(server, pki)
    try:
        await publish_config(cp)
        js = dp.client.jetstream(timeout=5)
        # What a data plane does on start: the last snapshot (STREAM.MSG.GET, nats-py's default).
        last = await js.get_last_msg(NAMES.config_stream, NAMES.config_subject())
        assert last.data == SNAPSHOT
        # ... and what it does to follow new ones: an ordered consumer.
        watch = await js.subscribe(
            NAMES.config_subject(), ordered_consumer=True, deliver_policy=DeliverPolicy.LAST_PER_SUBJECT
        )
        assert (await watch.next_msg(timeout=3)).data == SNAPSHOT
        await watch.unsubscribe()
        # A snapshot too large for one message, from the object store (ordered consumer on $O.<bucket>.>).
        store = await js.object_store(NAMES.snapshot_bucket)
        assert (await store.get("snapshot-1")).data == BIG

        # A heartbeat reaches the control planes' queue group.
        heartbeats = await cp.client.subscribe(NAMES.heartbeats, queue=CP_QUEUE_GROUP)
        await cp.client.flush()
        await dp.client.publish(NAMES.heartbeat_subject("dp1"), b"alive")
        heartbeat = await heartbeats.next_msg(timeout=3)
        assert (heartbeat.subject, heartbeat.data) == (NAMES.heartbeat_subject("dp1"), b"alive")
        assert dp.errors == [] and cp.errors == []
    finally:
        await dp.client.close()
        await cp.client.close()


def violations(connected: Connected) -> list[str]:
    # nats-py lower-cases the server's "-ERR 'Permissions Violation for Publish to ...'".
    return [str(e).lower() for e in connected.errors if "permissions violation" in str(e).lower()]


async def wait_for_violation(connected: Connected, subject: str) -> None:
    for _ in range(100):
        if any(subject.lower() in text for text in violations(connected)):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no permissions violation for {subject}: {connected.errors}")


async def test_data_plane_cannot_write_config_nor_change_streams(
    nats_server_factory: NatsServerFactory, pki: Pki
) -> None:
    server = start(nats_server_factory, pki)
    cp = await as_control_plane(server, pki)
    dp = await as_data_plane(server, pki)
    try:
        await publish_config(cp)
        # A captured data plane tries to inject a config: refused by the server.
        await dp.client.publish(NAMES.config_subject(), b"evil config")
        await dp.client.flush()
        await wait_for_violation(dp, NAMES.config_subject())

        js = dp.client.jetstream(timeout=1)
        store = await js.object_store(NAMES.snapshot_bucket)
        # Denied requests get no answer: run them together so the test waits for one timeout.
        outcomes = await asyncio.gather(
            js.delete_stream(NAMES.config_stream),
            js.purge_stream(NAMES.config_stream),
            # js.delete_msg ignores the context's timeout (5 s): the same request, by hand.
            dp.client.request(f"$JS.API.STREAM.MSG.DELETE.{NAMES.config_stream}", b'{"seq": 1}', timeout=1),
            js.update_stream(
                StreamConfig(name=NAMES.config_stream, subjects=["zg.default.evil.>"], max_msgs_per_subject=1)
            ),
            js.add_stream(StreamConfig(name="EVIL", subjects=[NAMES.config_wildcard])),
            js.delete_stream(NAMES.snapshot_object_stream),
            store.put("snapshot-1", b"evil snapshot"),
            return_exceptions=True,
        )
        assert all(isinstance(outcome, nats.errors.TimeoutError) for outcome in outcomes), outcomes
        for api in ("STREAM.DELETE", "STREAM.PURGE", "STREAM.MSG.DELETE", "STREAM.UPDATE", "STREAM.CREATE"):
            await wait_for_violation(dp, f"$JS.API.{api}.")
        await wait_for_violation(dp, f"$O.{NAMES.snapshot_bucket}.C.")

        # Reverse direction of the gap below: config messages aimed at the object store's subjects
        # find no interest, because nobody may subscribe there.
        objects = (await cp.client.jetstream().stream_info(NAMES.snapshot_object_stream)).state.messages
        await create_push_consumer(dp, NAMES.config_stream, f"$O.{NAMES.snapshot_bucket}.M.evil")
        await dp.client.subscribe(f"$O.{NAMES.snapshot_bucket}.M.evil")
        await dp.client.flush()
        await wait_for_violation(dp, f'subscription to "$O.{NAMES.snapshot_bucket}.M.evil"')
        await asyncio.sleep(0.3)  # time for a misdirected delivery to land, were it possible
        info = await cp.client.jetstream().stream_info(NAMES.snapshot_object_stream)
        assert info.state.messages == objects

        # The stream still holds exactly the control plane's snapshot, and the object is intact.
        cp_js = cp.client.jetstream(timeout=5)
        info = await cp_js.stream_info(NAMES.config_stream)
        assert info.state.messages == 1
        assert (await cp_js.get_last_msg(NAMES.config_stream, NAMES.config_subject())).data == SNAPSHOT
        assert (await (await cp_js.object_store(NAMES.snapshot_bucket)).get("snapshot-1")).data == BIG
    finally:
        await dp.client.close()
        await cp.client.close()


async def create_push_consumer(connected: Connected, stream: str, deliver_subject: str) -> None:
    request = {
        "stream_name": stream,
        "config": {"deliver_subject": deliver_subject, "ack_policy": "none", "deliver_policy": "all"},
    }
    reply = await connected.client.request(
        f"$JS.API.CONSUMER.CREATE.{stream}", json.dumps(request).encode(), timeout=2
    )
    assert b'"error"' not in reply.data, reply.data  # allowed: reading needs consumers


async def test_data_plane_cannot_copy_into_the_config_stream_through_a_consumer(
    nats_server_factory: NatsServerFactory, pki: Pki
) -> None:
    server = start(nats_server_factory, pki)
    cp = await as_control_plane(server, pki)
    dp = await as_data_plane(server, pki)
    try:
        await publish_config(cp)
        # The data plane listens for announcements only; the config subject is not for it.
        await dp.client.subscribe(NAMES.notify_subject())
        await dp.client.subscribe(NAMES.config_subject())
        await dp.client.flush()
        await asyncio.sleep(0.2)
        assert any("permissions violation" in str(error).lower() for error in dp.errors), dp.errors
        # So a push consumer aimed at the config subject finds no interest and copies nothing.
        await create_push_consumer(dp, NAMES.snapshot_object_stream, NAMES.config_subject())
        await asyncio.sleep(0.5)
        info = await cp.client.jetstream().stream_info(NAMES.config_stream)
        assert info.state.messages == 1, f"{info.state.messages - 1} messages copied into the config stream"
    finally:
        await dp.client.close()
        await cp.client.close()


async def test_certificates_without_role_or_from_another_ca_are_refused(
    nats_server_factory: NatsServerFactory, pki: Pki
) -> None:
    server = start(nats_server_factory, pki)
    ca = pki.ca.cert
    # Signed by the CA, valid, but no role identity: verify_and_map finds no user.
    assert await refused(server, client_ssl_context(ca, pki.no_role.cert, pki.no_role.key))
    assert await server_logged(server, "authentication error")
    # A data-plane certificate from another CA (it trusts our CA, so only the server can refuse it).
    assert await refused(server, client_ssl_context(ca, pki.stranger.cert, pki.stranger.key))
    assert await server_logged(server, "certificate signed by unknown authority")
    # The nats-server's own certificate is not a client identity either.
    assert await refused(server, client_ssl_context(ca, pki.server.cert, pki.server.key))
    # No certificate at all.
    assert await refused(server, client_ssl_context(ca))
    assert await server_logged(server, "client didn't provide a certificate")
    # And the real data plane still gets in.
    assert not await refused(server, client_ssl_context(ca, pki.data_plane.cert, pki.data_plane.key))


async def test_data_plane_counts_in_the_rate_limiting_bucket_and_nothing_more(
    nats_server_factory: NatsServerFactory, pki: Pki
) -> None:
    server = start(nats_server_factory, pki)
    cp = await as_control_plane(server, pki)
    dp = await as_data_plane(server, pki)
    try:
        await ratelimit_store.ensure_ratelimit_bucket(cp.client.jetstream(timeout=5), NAMES)
        js = dp.client.jetstream(timeout=5)
        counter = ratelimit_store.Counter(key="plugin.minute.60.abc", limit=3, ttl=120)
        # Two processes with their own view: the second one's first write conflicts, re-reads, counts.
        first, second = ratelimit_store.ClusterCounters(NAMES), ratelimit_store.ClusterCounters(NAMES)
        taken = [await first.take(js, [counter], ack_wait=2), await second.take(js, [counter], ack_wait=2)]
        taken.append(await first.take(js, [counter], ack_wait=2))
        assert [t.usage for t in taken] == [(0,), (1,), (2,)] and all(t.stop is None for t in taken)
        assert (await second.take(js, [counter], ack_wait=2)).stop == 0  # 3 of 3: refused, not counted
        last = await js.get_last_msg(
            NAMES.ratelimit_stream, NAMES.ratelimit_subject(counter.key), direct=True
        )
        assert last.data == b"3"
        assert violations(dp) == []
        # ... but it cannot create or delete the bucket's stream.
        with pytest.raises(nats.errors.TimeoutError):
            await dp.client.request(f"$JS.API.STREAM.DELETE.{NAMES.ratelimit_stream}", b"", timeout=0.5)
    finally:
        await dp.client.close()
        await cp.client.close()
