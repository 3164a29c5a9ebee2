"""The config stream and the snapshot object store: creating them, writing to them, reading them.

The stream keeps the last ``history`` snapshots per config group (``max_msgs_per_subject``),
on disk, so a data plane that starts while every control plane is down still boots from the
bus. Publication carries ``Nats-Msg-Id`` = version and hash, so when two control planes both
believe they lead for a moment (lock handover), the same version is stored once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import structlog
from nats.js import api
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError

from zonegate.bus.subjects import Names

log = structlog.get_logger(__name__)

DUPLICATE_WINDOW_SECONDS: Final = 120.0
# nats-py's object store default chunk is 128 KiB; bigger chunks mean fewer messages per snapshot.
_OBJECT_CHUNK: Final = 512 * 1024


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
        await js.add_stream(config)
        log.info("bus.stream_created", stream=names.config_stream, history=history)
        return
    if info.config.max_msgs_per_subject != history or names.config_wildcard not in (
        info.config.subjects or []
    ):
        await js.update_stream(config)
        log.info("bus.stream_updated", stream=names.config_stream, history=history)


async def ensure_snapshot_bucket(js: Any, names: Names, *, replicas: int = 1) -> Any:
    try:
        return await js.object_store(names.snapshot_bucket)
    except (BucketNotFoundError, NotFoundError):
        store = await js.create_object_store(
            names.snapshot_bucket,
            config=api.ObjectStoreConfig(
                bucket=names.snapshot_bucket,
                description="Zonegate config snapshots too large for one message",
                storage=api.StorageType.FILE,
                replicas=replicas,
            ),
        )
        log.info("bus.bucket_created", bucket=names.snapshot_bucket)
        return store


async def read_latest(js: Any, names: Names, group: str) -> StoredSnapshot | None:
    """The newest snapshot of ``group`` in the stream, or None when there is none (or no stream)."""
    try:
        message = await js.get_last_msg(names.config_stream, names.config_subject(group))
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
    try:
        store = await js.object_store(bucket)
        result = await store.get(name)
    except (BucketNotFoundError, ObjectNotFoundError, NotFoundError) as exc:
        raise LookupError(f"snapshot payload {bucket}/{name} is not in the object store ({exc!r})") from None
    return bytes(result.data or b"")


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
