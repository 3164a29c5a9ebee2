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

The leader also keeps, in the background, a mirror of the config stream in every region domain
(``cluster_region_domains``), retrying a region out of reach with capped backoff until it has
one; publishing never waits for a region. The hub's streams get ``cluster_js_replicas`` replicas.

When the newest snapshot on the bus was signed with another key (a control plane restarted with
a rotated key, or another control plane's own certificate in pki mode), the leader publishes
that same version again, signed with its key, with no Admin API write needed: data planes that
trust only the new key get it, and those already serving it rebuild nothing (same hash).

Invariant: a version is published at most once per hash and signing key (``Nats-Msg-Id``),
published versions only grow (a re-signed copy repeats the newest, never an older one), and a
snapshot that fails its own consistency check is never published.
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
from zonegate.core import config_delta
from zonegate.core.canonical import EncodingCache
from zonegate.core.config import Config

log = structlog.get_logger(__name__)

PUBLISHER_LOCK_KEY: Final = int.from_bytes(
    hashlib.sha256(b"zonegate:publisher").digest()[:8], "big", signed=True
)
LOCK_POLL_SECONDS: Final = 1.0
# A region whose mirrors could not be made is tried again after 1, 2, 4... seconds (full jitter)
# up to this; once every region has them, they are checked again this often.
REGION_RETRY_BASE_SECONDS: Final = 1.0
REGION_RETRY_CAP_SECONDS: Final = 60.0
# Room for the envelope (header, signature, certificate) and NATS headers under max_payload.
_ENVELOPE_ROOM: Final = 16 * 1024
# A change up to this size rides in the announcement as a delta; a bigger one (an import, a bulk
# edit) is read from the stream whole, which costs a data plane no more than the delta would.
DELTA_MAX_ENTITIES: Final = 2000
DELTA_MAX_BYTES: Final = 256 * 1024


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
    replicas: int = 1  # of the config stream, snapshot store and rate-limiting counters (hub only)


@dataclass(frozen=True, slots=True)
class Published:
    version: int
    config_hash: str
    sequence: int
    bytes: int
    in_object_store: bool


@dataclass(frozen=True, slots=True)
class _Base:
    """The last snapshot this publisher built: what a delta to the next one starts from."""

    version: int
    config_hash: str
    config: Config


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
        self._base: _Base | None = None
        self.published_count = 0
        self._resign = False  # the bus's newest snapshot was not signed by this signer
        self.last_error = ""
        self._regions_pending: list[str] = list(options.region_domains)
        self._regions_nudge = asyncio.Event()

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
        names, replicas = self.options.names, self.options.replicas
        await config_stream.ensure_config_stream(js, names, history=self.options.history, replicas=replicas)
        await config_stream.ensure_snapshot_bucket(js, names, replicas=replicas)
        try:  # rate-limiting's cluster counters; never a reason to stop publishing config
            await ratelimit_store.ensure_ratelimit_bucket(js, names, replicas=replicas)
        except Exception as exc:
            log.warning("publisher.ratelimit_bucket_failed", error=repr(exc))
        loop = asyncio.get_running_loop()
        # Regions in the background: one out of reach must not hold up the hub's publications.
        mirrors = loop.create_task(self._keep_region_mirrors(), name="publisher-region-mirrors")
        try:
            await self._read_bus_state(js)
            await self._announce()  # data planes that missed the last one while no one led
            self._wanted.set()  # publish whatever the database has that the bus does not
            async with self._store.listen(lambda _version: self._wanted.set(), poll_interval=2.0):
                watchdog = loop.create_task(self._watch_lock(conn, lost))
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
        finally:
            mirrors.cancel()
            await asyncio.gather(mirrors, return_exceptions=True)
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
        self._resign = False
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
        self._resign = not self._signer.made(
            signed.header, signed.signature, signed.signature_algorithm, signed.signer_certificate
        )
        log.info(
            "publisher.bus_state",
            version=header.version,
            config_hash=header.config_hash,
            signed_with_another_key=self._resign,
        )

    @property
    def regions_pending(self) -> tuple[str, ...]:
        """Region domains whose mirrors the last attempt could not make (tried again until they exist)."""
        return tuple(self._regions_pending)

    async def _ensure_regions(self) -> None:
        """After a publish: a region still without mirrors is tried again now, in the background
        (``_keep_region_mirrors``); a publication never waits for a region."""
        if self._regions_pending:
            self._regions_nudge.set()

    async def _keep_region_mirrors(self) -> None:
        """While leading: the config mirrors in every region domain, until each exists.

        A region out of reach (its link cut, its servers down) is tried again after a capped,
        jittered backoff, and at once after each publish; so a region cut off when this control
        plane took the lead gets its mirrors soon after its link heals, with no config change.
        Once all exist they are checked again every ``REGION_RETRY_CAP_SECONDS``: a region rebuilt
        with empty storage gets them back.
        """
        hub, regions = self.options.hub_domain, list(self.options.region_domains)
        if hub is None or not regions:
            self._regions_pending = []
            return
        todo, attempt = regions, 0
        while True:
            self._regions_nudge.clear()
            self._regions_pending = await config_stream.ensure_region_mirrors(
                self._bus.client,
                self.options.names,
                hub_domain=hub,
                region_domains=todo,
                history=self.options.history,
            )
            if self._regions_pending:
                todo = list(self._regions_pending)
                delay = backoff_delay(attempt, cap=REGION_RETRY_CAP_SECONDS, base=REGION_RETRY_BASE_SECONDS)
            else:
                todo, attempt, delay = regions, 0, REGION_RETRY_CAP_SECONDS
            try:
                async with asyncio.timeout(delay):
                    await self._regions_nudge.wait()
            except TimeoutError:  # the timer moves the backoff on; a burst of publishes does not
                attempt += 1 if self._regions_pending else 0

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

    async def _announce_delta(self, version: int, config_hash: str, delta: bytes) -> None:
        """The signed change from the last snapshot, ahead of the full one: no stream sequence
        yet (0), so a data plane that cannot apply it waits for the announcement that follows."""
        announcement = bus_pb2.Announcement(
            version=version, config_hash=config_hash, group=self.options.group, delta=delta
        )
        await self._bus.client.publish(
            self.options.names.notify_subject(self.options.group), announcement.SerializeToString()
        )

    def _delta(self, base: _Base, change: config_delta.ConfigDelta, header: bus_pb2.SnapshotHeader) -> bytes:
        """The signed delta from ``base`` to the snapshot just built, or b"" when it is too big
        for the announcement (data planes then read the full snapshot, as they always can)."""
        if not change or len(change) > DELTA_MAX_ENTITIES:
            return b""  # nothing changed (a re-signed copy), or a change better read whole
        encoded = snapshot.encode_delta(
            header,
            change,
            base_version=base.version,
            base_config_hash=base.config_hash,
            signer=self._signer,
            max_raw_size=min(self._inline_limit(), DELTA_MAX_BYTES),
        )
        return encoded or b""

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
        resign = self._resign and last is not None and current.version == last.version
        if last is not None and current.version <= last.version and not resign:
            return
        base = self._base
        on_bus = (last.version, last.config_hash) if last is not None else None
        if base is not None and on_bus is not None and (base.version, base.config_hash) != on_bus:
            base = None  # the bus moved on without us (another leader): no delta from our last
        # What changed since the last snapshot (entities are the same objects when unchanged):
        # the delta data planes get, and all the consistency check needs to look at. The
        # revisions the tracker just read say it, when they start from that snapshot.
        change: config_delta.ConfigDelta | None = None
        changed_from: config_delta.Change | None = None
        if base is not None:
            tracked = self._tracker.change
            if tracked is not None and tracked.base is base.config:
                change = tracked.delta
            else:
                change = config_delta.diff(base.config, current.config)
            changed_from = config_delta.Change(base.config, change)
        names = self.options.names
        prepared = await asyncio.to_thread(
            snapshot.prepare,
            current.config,
            version=current.version,
            cluster=names.cluster,
            group=self.options.group,
            signer_node=self.options.node_id,
            plugin_versions=self.options.plugin_versions or {},
            cache=self._encodings,
            changed_from=changed_from,
        )
        delta = b""
        if base is not None and change is not None and not resign:
            delta = self._delta(base, change, prepared.header)
        if delta:
            # Data planes serving the base need nothing else: tell them now, before the full
            # snapshot is compressed and stored (the announcement after that is for the others).
            await self._bus.wait_connected()
            await self._announce_delta(current.version, prepared.header.config_hash, delta)
        encoded = await asyncio.to_thread(
            snapshot.seal,
            prepared,
            signer=self._signer,
            inline_limit=self._inline_limit(),
            bucket=names.snapshot_bucket,
        )
        built = time.monotonic()
        msg_id = f"{self.options.group}:{current.version}:{encoded.header.config_hash}"
        if resign:
            assert last is not None
            if encoded.header.config_hash != last.config_hash:
                # The database holds another config under the bus's version (restored from a
                # backup?): never publish two configs as one version; the next write moves on.
                log.warning(
                    "publisher.resign_skipped",
                    version=current.version,
                    bus_hash=last.config_hash,
                    database_hash=encoded.header.config_hash,
                )
                self._resign = False
                return
            # Its own id: the first copy's would be dropped as a duplicate within the window.
            msg_id = f"{msg_id}:{self._signer.key_id}"
            log.info("publisher.resigning", version=current.version, key_id=self._signer.key_id)
        await self._bus.wait_connected()
        js = self._bus.jetstream()
        if encoded.in_object_store:
            await config_stream.put_object(js, names, encoded.header.object.name, encoded.payload)
        sequence = await config_stream.publish_snapshot(
            js,
            names,
            self.options.group,
            encoded.message,
            msg_id=msg_id,
        )
        self.last = Published(
            current.version,
            encoded.header.config_hash,
            sequence,
            len(encoded.payload),
            encoded.in_object_store,
        )
        self.published_count += 1
        self._resign = False
        self._base = _Base(current.version, encoded.header.config_hash, current.config)
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
            delta_bytes=len(delta),
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
