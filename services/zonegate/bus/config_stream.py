"""The config stream and the snapshot object store: creating them, writing to them, reading them.

The stream keeps the last ``history`` snapshots per config group (``max_msgs_per_subject``),
on disk, on ``replicas`` servers of the hub (``stream_replicas``), so a data plane that starts
while every control plane is down, or one hub server is, still boots from the bus. Publication
carries ``Nats-Msg-Id`` = version and hash, so when two control planes both believe they lead
for a moment (lock handover), the same version is stored once.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import structlog
from nats.js import api
from nats.js.errors import BucketNotFoundError, NotFoundError

from zonegate.bus import stream_replicas
from zonegate.bus.subjects import OBJECT_STREAM_PREFIX, Names

log = structlog.get_logger(__name__)

DUPLICATE_WINDOW_SECONDS: Final = 120.0
# nats-py's object store default chunk is 128 KiB; bigger chunks mean fewer messages per snapshot.
_OBJECT_CHUNK: Final = 512 * 1024
MIRRORED_OBJECT_MAX_AGE: Final = 30 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    sequence: int
    data: bytes


async def ensure_config_stream(js: Any, names: Names, *, history: int, replicas: int = 1) -> None:
    config = api.StreamConfig(
        name=names.config_stream,
        subjects=[names.config_wildcard],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        max_msgs_per_subject=history,
        discard=api.DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        num_replicas=replicas,
        allow_direct=True,
    )
    try:
        info = await js.stream_info(names.config_stream)
    except NotFoundError:
        await stream_replicas.create(
            js,
            lambda count: js.add_stream(replace(config, num_replicas=count)),
            names.config_stream,
            replicas,
        )
        log.info("bus.stream_created", stream=names.config_stream, history=history)
        return
    if info.config.max_msgs_per_subject != history or names.config_wildcard not in (
        info.config.subjects or []
    ):
        # The replica count stays as it is here: a change the servers refuse must not stop this one.
        await js.update_stream(replace(config, num_replicas=int(info.config.num_replicas or 1)))
        log.info("bus.stream_updated", stream=names.config_stream, history=history)
    await stream_replicas.ensure_replicas(js, names.config_stream, replicas)


async def ensure_snapshot_bucket(js: Any, names: Names, *, replicas: int | None = None) -> Any:
    """The snapshot object store, created if missing with ``replicas`` (None: 1); with ``replicas``
    given, an existing store is also scaled to it (``None`` leaves its count alone)."""
    try:
        store = await js.object_store(names.snapshot_bucket)
    except (BucketNotFoundError, NotFoundError):
        store = await stream_replicas.create(
            js,
            lambda count: js.create_object_store(
                names.snapshot_bucket,
                config=api.ObjectStoreConfig(
                    bucket=names.snapshot_bucket,
                    description="Zonegate config snapshots too large for one message",
                    storage=api.StorageType.FILE,
                    replicas=count,
                ),
            ),
            names.snapshot_object_stream,
            replicas or 1,
        )
        log.info("bus.bucket_created", bucket=names.snapshot_bucket)
        return store
    if replicas is not None:
        await stream_replicas.ensure_replicas(js, names.snapshot_object_stream, replicas)
    return store


async def read_latest(js: Any, names: Names, group: str) -> StoredSnapshot | None:
    """The newest snapshot of ``group`` in the stream, or None when there is none (or no stream)."""
    try:
        # Direct get: the raw message, not base64 inside a JSON API reply (the stream allows it).
        message = await js.get_last_msg(names.config_stream, names.config_subject(group), direct=True)
    except NotFoundError:
        return None
    return StoredSnapshot(int(message.seq), bytes(message.data or b""))


async def last_sequence(js: Any, names: Names) -> int:
    """The stream's last sequence: a cheap "has anything changed?" for the watchdog."""
    info = await js.stream_info(names.config_stream)
    return int(info.state.last_seq)


async def publish_snapshot(js: Any, names: Names, group: str, message: bytes, *, msg_id: str) -> int:
    ack = await js.publish(
        names.config_subject(group),
        message,
        stream=names.config_stream,
        headers={"Nats-Msg-Id": msg_id},
    )
    return int(ack.seq)


async def put_object(js: Any, names: Names, name: str, payload: bytes) -> None:
    store = await ensure_snapshot_bucket(js, names)
    await store.put(
        name,
        payload,
        meta=api.ObjectMeta(name=name, options=api.ObjectMetaOptions(max_chunk_size=_OBJECT_CHUNK)),
    )


async def get_object(js: Any, bucket: str, name: str) -> bytes:
    """Read an object with message gets on its stream, by name.

    Not nats-py's ``ObjectStore.get``: that finds the stream by subject and reads through a
    consumer, and a region's mirror has no subjects of its own. Message gets work on the hub's
    stream and on a mirror alike, and need no consumer (a data plane needs no right to make one).
    The caller checks the bytes against the signed snapshot header.
    """
    stream = f"{OBJECT_STREAM_PREFIX}{bucket}"
    meta_subject = f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
    try:
        meta = await js.get_last_msg(stream, meta_subject)
        info = json.loads(meta.data or b"{}")
    except NotFoundError:
        raise LookupError(f"snapshot payload {bucket}/{name} is not in the object store") from None
    except ValueError:
        raise LookupError(f"snapshot payload {bucket}/{name} has unreadable metadata") from None
    if info.get("deleted") or not info.get("nuid"):
        raise LookupError(f"snapshot payload {bucket}/{name} was deleted from the object store")
    size = int(info.get("size", 0))
    chunk_subject = f"$O.{bucket}.C.{info['nuid']}"
    parts: list[bytes] = []
    received, sequence = 0, 1
    while received < size:
        try:
            chunk = await js.get_msg(stream, seq=sequence, subject=chunk_subject, next=True)
        except NotFoundError:
            raise LookupError(
                f"snapshot payload {bucket}/{name} is incomplete ({received}/{size} bytes)"
            ) from None
        data = bytes(chunk.data or b"")
        parts.append(data)
        received += len(data)
        sequence = int(chunk.seq) + 1
    return b"".join(parts)


async def ensure_region_mirrors(
    client: Any, names: Names, *, hub_domain: str, region_domains: Sequence[str], history: int
) -> list[str]:
    """In each region's JetStream domain, a mirror of the config stream and of the payload stream.

    A region's data planes read these local copies, so they boot and update from their own region
    even while the link to the hub is cut; the mirrors catch up when it heals. Returns the domains
    that could not be reached (the caller retries later).
    """
    source_api = f"$JS.{hub_domain}.API"
    unreachable: list[str] = []
    for domain in region_domains:
        js = client.jetstream(domain=domain, timeout=5)
        try:
            for stream, extra in (
                (names.config_stream, {"max_msgs_per_subject": history}),
                # Deletes on the hub do not travel through a mirror: let old payloads age out.
                (names.snapshot_object_stream, {"max_age": MIRRORED_OBJECT_MAX_AGE}),
            ):
                try:
                    await js.stream_info(stream)
                    continue
                except NotFoundError:
                    pass
                await js.add_stream(
                    api.StreamConfig(
                        name=stream,
                        storage=api.StorageType.FILE,
                        mirror=api.StreamSource(name=stream, external=api.ExternalStream(api=source_api)),
                        allow_direct=True,
                        **extra,
                    )
                )
                log.info("bus.region_mirror_created", domain=domain, stream=stream, source=source_api)
        except Exception as exc:  # a region cut off right now: not an error worth stopping for
            log.warning("bus.region_mirror_unavailable", domain=domain, error=repr(exc))
            unreachable.append(domain)
    return unreachable


async def prune_objects(js: Any, names: Names, keep: set[str]) -> int:
    """Delete payload objects no retained snapshot refers to; returns how many went."""
    try:
        store = await js.object_store(names.snapshot_bucket)
        infos = await store.list(ignore_deletes=True)
    except (BucketNotFoundError, NotFoundError):
        return 0
    removed = 0
    for info in infos:
        if info.name not in keep:
            await store.delete(info.name)
            removed += 1
    return removed
