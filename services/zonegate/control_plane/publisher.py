"""The snapshot publisher: one control plane at a time turns config versions into bus snapshots.

Leadership is a PostgreSQL session advisory lock held on a dedicated connection: whoever holds
it publishes; the others poll for it every second, so when the leader dies (its session ends
and PostgreSQL frees the lock) another takes over within about a second. A leader that loses
its connection stops publishing at once.

The leader follows committed versions (``ConfigListener``: LISTEN plus a periodic read) and
publishes the first change at once; changes that arrive while it publishes, or within
``cluster_publish_interval`` after, go out together as the next snapshot. Each snapshot is one
consistent read of the whole config, checked, hashed, compressed and signed, then published
once into the config stream whatever the number of data planes. On taking over, the leader
reads what the bus already holds and publishes only if the database is ahead.

Invariant: a version is published at most once per hash (``Nats-Msg-Id``), published versions
only grow, and a snapshot that fails its own consistency check is never published.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog

from zonegate.bus import config_stream, ratelimit_store, snapshot
from zonegate.bus.connection import BusConnection, backoff_delay
from zonegate.bus.signing import Signer
from zonegate.bus.subjects import DEFAULT_GROUP, Names
from zonegate.bus.v1 import bus_pb2
from zonegate.control_plane import postgres
from zonegate.control_plane.config_tracker import ConfigTracker
from zonegate.control_plane.errors import StoreError
from zonegate.control_plane.store import Store
from zonegate.core.canonical import EncodingCache

log = structlog.get_logger(__name__)

PUBLISHER_LOCK_KEY: Final = int.from_bytes(
    hashlib.sha256(b"zonegate:publisher").digest()[:8], "big", signed=True
)
LOCK_POLL_SECONDS: Final = 1.0
# Room for the envelope (header, signature, certificate) and NATS headers under max_payload.
_ENVELOPE_ROOM: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class PublisherOptions:
    names: Names
    group: str = DEFAULT_GROUP
    history: int = 10
    min_interval: float = 0.1
    node_id: str = ""
    inline_limit: int | None = None  # None: the server's max_payload minus envelope room
    plugin_versions: Mapping[str, str] | None = None
    hub_domain: str | None = None  # this CP's JetStream domain, which region mirrors copy from
    region_domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Published:
    version: int
    config_hash: str
    sequence: int
    bytes: int
    in_object_store: bool


class Publisher:
    def __init__(
        self, store: Store, bus: BusConnection, signer: Signer, dsn: str, options: PublisherOptions
    ) -> None:
        self._store = store
        # The stored config, moved forward by the revision log rather than re-read per change.
        self._tracker = ConfigTracker(store)
        self._encodings = EncodingCache()  # so an unchanged entity is not encoded again
        self._bus = bus
        self._signer = signer
        self._dsn = dsn
        self._timeout = store.timeout
        self.options = options
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.is_leader = False
        self.last: Published | None = None
        self.published_count = 0
        self.last_error = ""
        self._regions_pending: list[str] = list(options.region_domains)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="publisher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- leadership ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            conn: postgres.Connection | None = None
            try:
                conn = await postgres.connect(self._dsn, connect_timeout=self._timeout)
                attempt = 0
                await self._wait_for_lock(conn)
                await self._lead(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost database or bus: step down, wait, try again
                self.last_error = repr(exc)
                log.warning("publisher.step_down", error=repr(exc))
            finally:
                self.is_leader = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(grace=1.0)
            await asyncio.sleep(backoff_delay(attempt, cap=5.0))
            attempt += 1

    async def _wait_for_lock(self, conn: postgres.Connection) -> None:
        # Polling, not pg_advisory_lock(): a blocked statement would hide a dead connection.
        while True:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", PUBLISHER_LOCK_KEY):
                return
            await asyncio.sleep(LOCK_POLL_SECONDS)

    async def _lead(self, conn: postgres.Connection) -> None:
        lost = asyncio.Event()
        conn.on_termination(lost.set)
        self.is_leader = True
        log.info("publisher.leading", node_id=self.options.node_id)
        await self._bus.wait_connected()
        js = self._bus.jetstream()
        await config_stream.ensure_config_stream(js, self.options.names, history=self.options.history)
        await config_stream.ensure_snapshot_bucket(js, self.options.names)
        try:  # rate-limiting's cluster counters; never a reason to stop publishing config
            await ratelimit_store.ensure_ratelimit_bucket(js, self.options.names)
        except Exception as exc:
            log.warning("publisher.ratelimit_bucket_failed", error=repr(exc))
        await self._ensure_regions()
        await self._read_bus_state(js)
        await self._announce()  # data planes that missed the last one while no one led
        self._wanted.set()  # publish whatever the database has that the bus does not
        async with self._store.listen(lambda _version: self._wanted.set(), poll_interval=2.0):
            watchdog = asyncio.get_running_loop().create_task(self._watch_lock(conn, lost))
            try:
                while not lost.is_set():
                    await _first(self._wanted.wait(), lost.wait())
                    if lost.is_set():
                        break
                    self._wanted.clear()
                    await self._publish_latest()
                    await asyncio.sleep(self.options.min_interval)
            finally:
                watchdog.cancel()
                await asyncio.gather(watchdog, return_exceptions=True)
        raise StoreError("lost the publisher lock connection")

    async def _watch_lock(self, conn: postgres.Connection, lost: asyncio.Event) -> None:
        """A cut link sends no reset: prove the lock's session alive every few seconds."""
        while True:
            await asyncio.sleep(2.0)
            try:
                await conn.fetchval("SELECT 1", query_timeout=self._timeout)
            except Exception:
                lost.set()
                return

    # -- publishing ---------------------------------------------------------------------------------

    async def _read_bus_state(self, js: Any) -> None:
        stored = await config_stream.read_latest(js, self.options.names, self.options.group)
        if stored is None:
            return
        try:
            signed = bus_pb2.SignedSnapshot.FromString(stored.data)
            header = bus_pb2.SnapshotHeader.FromString(signed.header)
        except Exception:  # a garbage message on the stream: publish over it
            log.warning("publisher.unreadable_bus_snapshot", sequence=stored.sequence)
            return
        self.last = Published(
            int(header.version), header.config_hash, stored.sequence, len(stored.data), False
        )
        log.info("publisher.bus_state", version=header.version, config_hash=header.config_hash)

    async def _ensure_regions(self) -> None:
        """Mirrors in every region domain; a region unreachable now is tried again next publish."""
        if not self._regions_pending or self.options.hub_domain is None:
            return
        self._regions_pending = await config_stream.ensure_region_mirrors(
            self._bus.client,
            self.options.names,
            hub_domain=self.options.hub_domain,
            region_domains=self._regions_pending,
            history=self.options.history,
        )

    async def _announce(self) -> None:
        """Tell data planes a snapshot is in the stream (they read it there; see ``Names``)."""
        last = self.last
        if last is None:
            return
        announcement = bus_pb2.Announcement(
            version=last.version,
            config_hash=last.config_hash,
            stream_sequence=last.sequence,
            group=self.options.group,
        )
        await self._bus.client.publish(
            self.options.names.notify_subject(self.options.group), announcement.SerializeToString()
        )

    def _inline_limit(self) -> int:
        if self.options.inline_limit is not None:
            return self.options.inline_limit
        max_payload = int(self._bus.client.max_payload or 1024 * 1024)
        return max(max_payload - _ENVELOPE_ROOM, 1024)

    async def _publish_latest(self) -> None:
        attempt = 0
        while True:
            try:
                await self._publish_once()
                self.last_error = ""
                return
            except asyncio.CancelledError:
                raise
            except snapshot.SnapshotRejected as exc:  # a bug or corrupt row: never publish it
                self.last_error = str(exc)
                log.error("publisher.snapshot_rejected", reason=str(exc))
                return
            except StoreError:
                raise
            except Exception as exc:  # the bus is down or slow: retry this same version soon
                self.last_error = repr(exc)
                delay = backoff_delay(attempt, cap=5.0)
                log.warning("publisher.publish_failed", error=repr(exc), retry_in=round(delay, 2))
                attempt += 1
                await asyncio.sleep(delay)

    async def _publish_once(self) -> None:
        started = time.monotonic()
        current = await self._tracker.current()
        last = self.last
        if last is not None and current.version <= last.version:
            return
        names = self.options.names
        encoded = await asyncio.to_thread(
            snapshot.encode,
            current.config,
            version=current.version,
            cluster=names.cluster,
            group=self.options.group,
            signer=self._signer,
            signer_node=self.options.node_id,
            plugin_versions=self.options.plugin_versions or {},
            inline_limit=self._inline_limit(),
            bucket=names.snapshot_bucket,
            cache=self._encodings,
        )
        built = time.monotonic()
        await self._bus.wait_connected()
        js = self._bus.jetstream()
        if encoded.in_object_store:
            await config_stream.put_object(js, names, encoded.header.object.name, encoded.payload)
        sequence = await config_stream.publish_snapshot(
            js,
            names,
            self.options.group,
            encoded.message,
            msg_id=f"{self.options.group}:{current.version}:{encoded.header.config_hash}",
        )
        self.last = Published(
            current.version,
            encoded.header.config_hash,
            sequence,
            len(encoded.payload),
            encoded.in_object_store,
        )
        self.published_count += 1
        await self._announce()
        await self._ensure_regions()
        log.info(
            "publisher.published",
            version=current.version,
            config_hash=encoded.header.config_hash,
            sequence=sequence,
            payload_bytes=len(encoded.payload),
            raw_bytes=encoded.header.raw_size,
            object_store=encoded.in_object_store,
            build_ms=round((built - started) * 1000, 1),
            total_ms=round((time.monotonic() - started) * 1000, 1),
        )
        if encoded.in_object_store or self.published_count % 10 == 0:
            await self._prune(js)

    async def _prune(self, js: Any) -> None:
        """Keep only the payload objects that retained snapshots refer to."""
        keep: set[str] = set()
        names = self.options.names
        try:
            subject = names.config_subject(self.options.group)
            info = await js.stream_info(names.config_stream)
            first, last = int(info.state.first_seq), int(info.state.last_seq)
            for seq in range(max(first, last - 4 * self.options.history), last + 1):
                with contextlib.suppress(Exception):
                    message = await js.get_msg(names.config_stream, seq)
                    if message.subject != subject:
                        continue
                    header = bus_pb2.SnapshotHeader.FromString(
                        bus_pb2.SignedSnapshot.FromString(message.data).header
                    )
                    if header.HasField("object"):
                        keep.add(header.object.name)
            removed = await config_stream.prune_objects(js, names, keep)
            if removed:
                log.info("publisher.pruned_objects", removed=removed, kept=len(keep))
        except Exception as exc:  # pruning is housekeeping: never let it stop publication
            log.warning("publisher.prune_failed", error=repr(exc))


async def _first(*aws: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
