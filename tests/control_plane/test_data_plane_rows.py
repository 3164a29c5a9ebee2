"""Data-plane status rows: heartbeats and acks folded and written in batches, purged when stale."""

from __future__ import annotations

import ssl
import uuid
from dataclasses import dataclass

from zonegate.bus.connection import BusConnection, BusOptions
from zonegate.bus.subjects import Names
from zonegate.bus.v1 import bus_pb2
from zonegate.control_plane import data_planes
from zonegate.control_plane.data_planes import DataPlaneCollector
from zonegate.control_plane.store import Store

NAMES = Names("default")
DELAY = 3600


@dataclass
class Message:
    """What nats-py hands a subscription callback: a subject and the bytes."""

    subject: str
    data: bytes


def heartbeat(node: str, version: int = 5, **fields: object) -> Message:
    beat = bus_pb2.Heartbeat(
        node_id=node,
        hostname=f"host-{node[:4]}",
        ip="10.0.0.7",
        zonegate_version="0.1.0",
        labels={"zone": "a"},
        config_version=version,
        config_hash="a" * 32,
        sync_status="normal",
        cert_expiry=2_000_000_000,
        **fields,  # type: ignore[arg-type]
    )
    return Message(NAMES.heartbeat_subject(node), beat.SerializeToString())


def collector(store: Store) -> DataPlaneCollector:
    # Never started: these tests drive the handlers and flushes directly, the bus is not involved.
    bus = BusConnection(
        BusOptions(
            servers=("tls://127.0.0.1:1",), tls=ssl.create_default_context(), tls_hostname=None, name="t"
        )
    )
    return DataPlaneCollector(store.database, bus, NAMES, purge_delay=DELAY)


async def rows(store: Store) -> dict[str, data_planes.DataPlaneRow]:
    return {row.id: row for row in await data_planes.all_rows(store.database, purge_delay=DELAY)}


async def test_heartbeats_are_written_in_one_batch_latest_wins(store: Store) -> None:
    c = collector(store)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    await c._on_heartbeat(heartbeat(a, version=1))
    await c._on_heartbeat(heartbeat(a, version=2))
    await c._on_heartbeat(heartbeat(b, version=2))
    assert a not in await rows(store)  # nothing is written before the flush
    await c.flush()
    found = await rows(store)
    assert found[a].config_version == 2 and found[b].config_version == 2
    assert found[a].labels == {"zone": "a"} and found[a].cert_expiry == 2_000_000_000
    assert c.flushed == 2


async def test_an_ack_refusal_shows_on_the_row(store: Store) -> None:
    c = collector(store)
    node = str(uuid.uuid4())
    await c._on_heartbeat(heartbeat(node, version=3))
    await c.flush()
    nack = bus_pb2.Ack(
        node_id=node,
        version=4,
        applied=False,
        reason="signature check failed: bad signature",
        sync_status="config_rejected",
        serving_version=3,
        serving_hash="a" * 32,
    )
    await c._on_ack(Message(NAMES.ack_subject(node), nack.SerializeToString()))
    await c.flush()
    row = (await rows(store))[node]
    assert (row.sync_status, row.rejected_version, row.config_version) == ("config_rejected", 4, 3)
    body = row.kong_body(DELAY, row.last_seen)
    assert body["config_rejected"] == {"version": 4, "reason": "signature check failed: bad signature"}
    assert body["ttl"] == DELAY
    # The reason is the row's last error at once, not only after the next heartbeat...
    assert body["last_error"] == "signature check failed: bad signature"
    # ...and an applied ack clears both, as the data plane does (also when folded with a heartbeat
    # waiting for the same flush).
    ack = bus_pb2.Ack(
        node_id=node, version=5, applied=True, sync_status="normal", serving_version=5, serving_hash="b" * 32
    )
    await c._on_ack(Message(NAMES.ack_subject(node), ack.SerializeToString()))
    await c.flush()
    body = (await rows(store))[node].kong_body(DELAY, row.last_seen)
    assert (body["last_error"], body["config_rejected"], body["sync_status"]) == (None, None, "normal")
    await c._on_heartbeat(heartbeat(node, version=5))
    await c._on_ack(Message(NAMES.ack_subject(node), nack.SerializeToString()))
    await c.flush()
    body = (await rows(store))[node].kong_body(DELAY, row.last_seen)
    assert body["last_error"] == "signature check failed: bad signature"


async def test_a_body_naming_another_node_is_not_believed(store: Store) -> None:
    c = collector(store)
    honest, victim = str(uuid.uuid4()), str(uuid.uuid4())
    forged = heartbeat(victim)
    await c._on_heartbeat(Message(NAMES.heartbeat_subject(honest), forged.data))
    await c._on_heartbeat(Message(NAMES.heartbeat_subject(honest), b"\xff not protobuf"))
    await c.flush()
    assert honest not in await rows(store) and victim not in await rows(store)


async def test_stale_rows_are_hidden_then_purged(store: Store) -> None:
    c = collector(store)
    fresh, stale = str(uuid.uuid4()), str(uuid.uuid4())
    for node in (fresh, stale):
        await c._on_heartbeat(heartbeat(node))
    await c.flush()
    async with store.database.acquire() as conn:
        await conn.execute(
            "UPDATE clustering_data_planes SET last_seen = last_seen - make_interval(secs => $2) "
            "WHERE id = $1",
            stale,
            float(DELAY + 5),
        )
    found = await rows(store)
    assert fresh in found and stale not in found
    assert await c.purge() >= 1
    async with store.database.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM clustering_data_planes WHERE id = $1", stale) == 0
