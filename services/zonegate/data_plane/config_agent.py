"""The data plane's bus client: follow the config stream, check each snapshot, apply, answer.

Sources of snapshots, all funnelled through one ``offer``: the newest message of the config
stream, read directly after every (re)connect, after every announcement the publisher sends on
the notify subject (plain NATS: no consumer state that could stall, and no interest on the
config subject that a rogue consumer could use), and by a watchdog that asks the stream for its
last sequence every ``cluster_watchdog_interval`` and re-reads when it moved unannounced.

Each snapshot is checked in order: signature and cluster/group, then version compatibility
(Kong's statuses), then the payload's size and digest against the signed header, decoding, and
consistency (every reference resolves). Only then is it
applied (router, balancers, plugins swapped by the proxy host) and cached; the answer is an
ack with the version now served, or a nack with the reason and the version still served.

A verified snapshot whose config is the one already served (the same version signed again by
a control plane with a rotated key, or the bus's copy of what the cache held at start) rebuilds
nothing; it only confirms the state: a data plane that was not ``normal`` (``unknown`` after a
start from its cache, or a refusal this snapshot supersedes) becomes ``normal`` and says so.

Invariant: the applied version never goes backwards, one snapshot is processed at a time, the
same (version, hash) is never applied twice, and a refused snapshot is answered once (not at
every watchdog tick) and never replaces the running config.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog
from google.protobuf.message import DecodeError

from zonegate import __version__
from zonegate.bus import config_stream
from zonegate.bus.connection import BusConnection
from zonegate.bus.signing import Verifier
from zonegate.bus.snapshot import (
    OpenedSnapshot,
    SnapshotRejected,
    checked,
    decode_delta,
    decode_payload,
    open_message,
)
from zonegate.bus.subjects import Names
from zonegate.bus.v1 import bus_pb2
from zonegate.core import compat, config_delta
from zonegate.core.canonical import ConfigHash
from zonegate.core.config import Config
from zonegate.core.config_delta import Change

_LAG_RETRIES: Final = 5
_LAG_DELAY: Final = 0.05

log = structlog.get_logger(__name__)


class SnapshotTarget(Protocol):
    """What the agent applies snapshots to: the node, which swaps the proxy and writes the cache."""

    config: Config  # the config being served: what a delta applies to

    async def apply_snapshot(
        self,
        config: Config,
        version: int,
        hashes: ConfigHash,
        payload: bytes | None = None,
        delta: bytes | None = None,
        change: Change | None = None,
    ) -> None:
        """``payload``: the snapshot's compressed canonical JSON, cached as it is (no re-encoding);
        ``delta``: a delta's payload, cached after the config it applies to; ``change``: that
        delta decoded, with the config it was applied to (only what it names is rebuilt)."""
        ...


@dataclass(slots=True)
class SyncState:
    """What this data plane serves and what it last refused; heartbeats report it."""

    version: int = 0
    config_hash: str = ""
    status: compat.SyncStatus = "unknown"
    last_error: str = ""
    rejected_version: int = 0
    rejected_hash: str = ""
    applied_at: float = 0.0
    cache_problem: str = ""  # a cache found unreadable at start: reported until the node restarts


class ConfigAgent:
    def __init__(
        self,
        *,
        bus: BusConnection,
        names: Names,
        group: str,
        verifier: Verifier,
        target: SnapshotTarget,
        state: SyncState,
        node_id: str,
        installed_plugins: Mapping[str, str],
        watchdog_interval: float,
    ) -> None:
        self._bus = bus
        self._names = names
        self._group = group
        self._verifier = verifier
        self._target = target
        self.state = state
        self._node_id = node_id
        self._installed = dict(installed_plugins)
        self._watchdog_interval = watchdog_interval
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscription: Any = None
        self._last_sequence = 0
        self._from_delta: tuple[int, str] | None = None  # applied from a delta, full one not seen yet
        self.offers = 0

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._spawn(self._watchdog(), "config-watchdog")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_connect(self) -> None:
        """After every (re)connect: listen for announcements, then read the newest snapshot."""
        nc = self._bus.client
        if self._subscription is None:
            self._subscription = await nc.subscribe(
                self._names.notify_subject(self._group), cb=self._on_announcement
            )
        await self.resync()

    async def resync(self, announced: int = 0) -> None:
        """Read the newest snapshot; ``announced``: the version to expect (a region's copy may lag)."""
        js = self._bus.jetstream()
        for attempt in range(_LAG_RETRIES):
            stored = await config_stream.read_latest(js, self._names, self._group)
            if stored is None:
                log.info("config_agent.stream_empty", stream=self._names.config_stream)
                return
            self._last_sequence = max(self._last_sequence, stored.sequence)
            version = await self.offer(stored.data, stored.sequence)
            if version is None or version >= announced:
                return
            await asyncio.sleep(_LAG_DELAY * (attempt + 1))
        log.warning("config_agent.copy_lagging", announced=announced, serving=self.state.version)

    async def _on_announcement(self, msg: Any) -> None:
        try:
            announcement = bus_pb2.Announcement.FromString(msg.data)
        except DecodeError:
            log.warning("config_agent.bad_announcement", subject=msg.subject)
            return
        state = self.state
        if (
            announcement.version <= state.version
            and announcement.config_hash == state.config_hash
            and state.status == "normal"
        ):
            if self._from_delta == (announcement.version, announcement.config_hash):
                # The full snapshot of the delta just applied: nothing in the stream for the
                # watchdog to re-read. (Only this one: a later copy of the same version, say
                # re-signed with a new key, is still read and judged.)
                self._from_delta = None
                self._last_sequence = max(self._last_sequence, int(announcement.stream_sequence))
            return
        # Runs in nats-py's subscription task: hand off, so a slow apply never blocks the client.
        if announcement.delta:
            self._spawn(self._delta_or_resync(announcement), "config-delta")
        else:
            self._spawn(self.resync(int(announcement.version)), "config-resync")

    async def _delta_or_resync(self, announcement: bus_pb2.Announcement) -> None:
        """Apply the announced delta when it starts from what this node serves; else, or when it
        fails, read the full snapshot from the stream as without deltas. A delta announced ahead
        of its full snapshot (no stream sequence yet) is followed by the full one's announcement:
        that one brings the re-read."""
        sequence = int(announcement.stream_sequence)
        if not await self.offer_delta(announcement.delta, sequence) and sequence:
            await self.resync(int(announcement.version))

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(self._watchdog_interval)
            if not self._bus.is_connected:
                continue
            try:
                sequence = await config_stream.last_sequence(self._bus.jetstream(), self._names)
                if sequence != self._last_sequence:
                    log.info("config_agent.watchdog_resync", last_sequence=sequence, seen=self._last_sequence)
                    await self.resync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("config_agent.watchdog_failed", error=repr(exc))

    # -- one snapshot ---------------------------------------------------------------------------------

    async def offer(self, data: bytes, sequence: int) -> int | None:
        """Check and apply one snapshot; returns its version (None when it cannot be read)."""
        async with self._lock:
            self.offers += 1
            try:
                opened = open_message(data, self._verifier, cluster=self._names.cluster, group=self._group)
            except SnapshotRejected as exc:
                # Nothing in it can be trusted, not even its version: refuse without remembering it.
                await self._refuse(None, sequence, "config_rejected", str(exc))
                return None
            if self._is_new(opened):
                await self._check_and_apply(opened, sequence)
            elif self._confirms_serving(opened):
                await self._confirm(opened, sequence)
            return opened.version

    async def offer_delta(self, data: bytes, sequence: int) -> bool:
        """Apply a delta snapshot if it starts from the config served; False: read the full one.

        A delta that does not verify, decode or apply cleanly is not refused (no nack, nothing
        remembered): the full snapshot it stands for is in the stream, and that one is judged as
        always, so a data-plane-side problem with a delta never costs more than the full read.
        """
        async with self._lock:
            try:
                opened = open_message(
                    data, self._verifier, cluster=self._names.cluster, group=self._group, delta=True
                )
            except SnapshotRejected as exc:
                log.warning("config_agent.delta_unusable", reason=str(exc))
                return False
            state = self.state
            if opened.base != (state.version, state.config_hash):
                return False  # it starts from another config: the stream has the whole one
            if not self._is_new(opened):
                return True
            self.offers += 1
            if not await self._compatible_or_refuse(opened, sequence):
                return True  # the full snapshot carries the same versions: refused for both
            started = time.monotonic()
            try:
                config, change = await asyncio.to_thread(self._apply_delta, opened)
            except SnapshotRejected as exc:
                log.warning("config_agent.delta_unusable", version=opened.version, reason=str(exc))
                return False
            await self._apply(opened, sequence, config, started, delta=opened.inline_payload, change=change)
            self._from_delta = (opened.version, opened.config_hash)
            return True

    async def _compatible_or_refuse(self, opened: OpenedSnapshot, sequence: int) -> bool:
        verdict = self._verdict(opened)
        if not verdict.compatible:
            await self._refuse(opened, sequence, verdict.status, verdict.reason)
        return verdict.compatible

    async def _check_and_apply(self, opened: OpenedSnapshot, sequence: int) -> None:
        if not await self._compatible_or_refuse(opened, sequence):
            return
        started = time.monotonic()
        try:
            payload = await self._payload(opened)
            config = await asyncio.to_thread(decode_payload, opened, payload)
        except (SnapshotRejected, LookupError) as exc:
            await self._refuse(opened, sequence, "config_rejected", str(exc))
            return
        await self._apply(opened, sequence, config, started, payload=payload)

    async def _apply(
        self,
        opened: OpenedSnapshot,
        sequence: int,
        config: Config,
        started: float,
        *,
        payload: bytes | None = None,
        delta: bytes | None = None,
        change: Change | None = None,
    ) -> None:
        decoded = time.monotonic()
        try:
            await self._target.apply_snapshot(config, opened.version, opened.hashes, payload, delta, change)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # valid but not appliable (a bug): keep serving, say why
            log.exception("config_agent.apply_failed", version=opened.version)
            await self._refuse(opened, sequence, "config_rejected", f"apply failed: {exc!r}")
            return
        state = self.state
        state.version, state.config_hash, state.status = opened.version, opened.config_hash, "normal"
        state.last_error, state.rejected_version, state.rejected_hash = "", 0, ""
        state.applied_at = time.time()
        log.info(
            "config_agent.applied",
            version=opened.version,
            config_hash=opened.config_hash,
            delta=delta is not None,
            decode_ms=round((decoded - started) * 1000, 1),
            apply_ms=round((time.monotonic() - decoded) * 1000, 1),
        )
        await self._answer(opened.version, opened.config_hash, True, "", sequence)

    def _confirms_serving(self, opened: OpenedSnapshot) -> bool:
        """A verified snapshot of the config served, newest known, while the status is not normal."""
        state = self.state
        return (
            state.status != "normal"
            and opened.config_hash == state.config_hash
            and opened.version >= state.version
            and opened.version > state.rejected_version
            and self._compatible(opened)
        )

    async def _confirm(self, opened: OpenedSnapshot, sequence: int) -> None:
        state = self.state
        state.version, state.status = opened.version, "normal"
        state.last_error, state.rejected_version, state.rejected_hash = "", 0, ""
        log.info("config_agent.confirmed", version=opened.version, config_hash=opened.config_hash)
        await self._answer(opened.version, opened.config_hash, True, "", sequence)

    def _compatible(self, opened: OpenedSnapshot) -> bool:
        return self._verdict(opened).compatible

    def _verdict(self, opened: OpenedSnapshot) -> compat.Verdict:
        return compat.check(
            data_plane=__version__,
            control_plane=opened.header.zonegate_version,
            installed_plugins=self._installed,
            configured_plugins=dict(opened.header.plugins),
        )

    def _apply_delta(self, opened: OpenedSnapshot) -> tuple[Config, Change]:
        delta = decode_delta(opened, opened.inline_payload)
        base = self._target.config
        return checked(config_delta.apply(base, delta), delta), Change(base, delta)

    def _is_new(self, opened: OpenedSnapshot) -> bool:
        state = self.state
        if opened.config_hash == state.config_hash and opened.version <= state.version:
            return False  # identical config: no rebuild, no second ack
        if opened.version < state.version:
            return False  # an older snapshot (a re-read, a lagging mirror): never go back
        if opened.version == state.rejected_version and opened.config_hash == state.rejected_hash:
            return False  # already refused and answered
        if opened.config_hash == state.config_hash:
            # Same config under a newer version (e.g. a change undone): adopt the version, no rebuild.
            state.version = opened.version
            return False
        return True

    async def _payload(self, opened: OpenedSnapshot) -> bytes:
        reference = opened.object_reference
        if reference is None:
            return opened.inline_payload
        bucket, name = reference
        return await config_stream.get_object(self._bus.jetstream(), bucket, name)

    async def _refuse(
        self, opened: OpenedSnapshot | None, sequence: int, status: compat.SyncStatus, reason: str
    ) -> None:
        state = self.state
        state.status, state.last_error = status, reason
        version = opened.version if opened is not None else 0
        config_hash = opened.config_hash if opened is not None else ""
        if opened is not None:
            state.rejected_version, state.rejected_hash = version, config_hash
        log.error(
            "config_agent.rejected", version=version, status=status, reason=reason, serving=state.version
        )
        await self._answer(version, config_hash, False, reason, sequence)

    async def _answer(
        self, version: int, config_hash: str, applied: bool, reason: str, sequence: int
    ) -> None:
        state = self.state
        ack = bus_pb2.Ack(
            node_id=self._node_id,
            version=version,
            config_hash=config_hash,
            applied=applied,
            reason=reason,
            sync_status=state.status,
            serving_version=state.version,
            serving_hash=state.config_hash,
            at_ms=int(time.time() * 1000),
            stream_sequence=sequence,
        )
        try:
            await self._bus.client.publish(self._names.ack_subject(self._node_id), ack.SerializeToString())
        except Exception as exc:  # the heartbeat carries the same state; a lost ack is not fatal
            log.warning("config_agent.ack_failed", error=repr(exc))
