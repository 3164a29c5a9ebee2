"""Data-plane status on the control plane: heartbeats and acks in, Kong's rows out.

Every control plane subscribes in one NATS queue group, so each message is handled by exactly
one of them, whatever the number of replicas. Messages only update an in-memory map (the latest
per data plane wins); a flush writes the whole map in one statement every ``flush_interval``,
so a thousand data planes cost one write a second rather than a hundred. Rows of data planes
not seen for ``purge_delay`` seconds are deleted, and never shown in the meantime.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import structlog
from google.protobuf.message import DecodeError

from zonegate.bus.connection import BusConnection
from zonegate.bus.subjects import CP_QUEUE_GROUP, Names, node_from_subject
from zonegate.bus.v1 import bus_pb2
from zonegate.control_plane import postgres
from zonegate.core.compat import SYNC_STATUSES

log = structlog.get_logger(__name__)

PURGE_EVERY_SECONDS: Final = 60.0

_COLUMNS: Final = (
    "id, hostname, ip, version, labels, plugins, config_hash, config_version, sync_status, "
    "rejected_version, rejected_reason, last_error, config_group, cert_expiry, last_seen, updated_at"
)
_UPSERT: Final = f"""
INSERT INTO clustering_data_planes ({_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (id) DO UPDATE SET
  hostname = EXCLUDED.hostname, ip = EXCLUDED.ip, version = EXCLUDED.version,
  labels = EXCLUDED.labels, plugins = EXCLUDED.plugins, config_hash = EXCLUDED.config_hash,
  config_version = EXCLUDED.config_version, sync_status = EXCLUDED.sync_status,
  rejected_version = EXCLUDED.rejected_version, rejected_reason = EXCLUDED.rejected_reason,
  last_error = EXCLUDED.last_error, config_group = EXCLUDED.config_group,
  cert_expiry = EXCLUDED.cert_expiry, last_seen = EXCLUDED.last_seen, updated_at = EXCLUDED.updated_at
"""
# An ack carries the data plane's own view of its config: a nack's reason is its last error (what
# its next heartbeat will say too), an applied ack clears it, as the data plane itself does.
_ACK_UPDATE: Final = """
UPDATE clustering_data_planes SET
  config_hash = $2, config_version = $3, sync_status = $4,
  rejected_version = $5, rejected_reason = $6, last_error = $6, updated_at = $7
WHERE id = $1
"""


@dataclass(frozen=True, slots=True)
class DataPlaneRow:
    id: str
    hostname: str
    ip: str
    version: str
    labels: dict[str, str]
    plugins: dict[str, str]
    config_hash: str
    config_version: int
    sync_status: str
    rejected_version: int | None
    rejected_reason: str | None
    last_error: str | None
    config_group: str
    cert_expiry: int | None
    last_seen: dt.datetime
    updated_at: dt.datetime

    def record(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.hostname,
            self.ip,
            self.version,
            self.labels,
            self.plugins,
            self.config_hash,
            self.config_version,
            self.sync_status,
            self.rejected_version,
            self.rejected_reason,
            self.last_error,
            self.config_group,
            self.cert_expiry,
            self.last_seen,
            self.updated_at,
        )

    def kong_body(self, purge_delay: int, now: dt.datetime) -> dict[str, Any]:
        """Kong's fields (``ttl``: seconds left before the purge), then ours."""
        body: dict[str, Any] = {
            "id": self.id,
            "hostname": self.hostname,
            "ip": self.ip,
            "version": self.version,
            "labels": self.labels,
            "config_hash": self.config_hash,
            "sync_status": self.sync_status,
            "last_seen": int(self.last_seen.timestamp()),
            "updated_at": int(self.updated_at.timestamp()),
            "ttl": max(0, int(purge_delay - (now - self.last_seen).total_seconds())),
            "cert_details": {"expiry_timestamp": self.cert_expiry},
            "config_version": self.config_version,
            "config_rejected": None,
            "plugins": self.plugins,
            "group": self.config_group,
            "last_error": self.last_error or None,
        }
        if self.rejected_version:
            body["config_rejected"] = {"version": self.rejected_version, "reason": self.rejected_reason}
        return body


def _status(value: str) -> str:
    return value if value in SYNC_STATUSES else "unknown"


def row_from_heartbeat(beat: bus_pb2.Heartbeat, node_id: str, now: dt.datetime) -> DataPlaneRow:
    return DataPlaneRow(
        id=node_id,
        hostname=beat.hostname,
        ip=beat.ip,
        version=beat.zonegate_version,
        labels=dict(beat.labels),
        plugins=dict(beat.plugins),
        config_hash=beat.config_hash,
        config_version=int(beat.config_version),
        sync_status=_status(beat.sync_status),
        rejected_version=int(beat.rejected_version) or None,
        rejected_reason=beat.last_error if beat.rejected_version else None,
        last_error=beat.last_error or None,
        config_group=beat.group or "default",
        cert_expiry=int(beat.cert_expiry) or None,
        last_seen=now,
        updated_at=now,
    )


def _decode_row(record: Any) -> DataPlaneRow:
    return DataPlaneRow(
        id=str(record["id"]),
        hostname=record["hostname"],
        ip=record["ip"],
        version=record["version"],
        labels=dict(record["labels"] or {}),
        plugins=dict(record["plugins"] or {}),
        config_hash=record["config_hash"],
        config_version=int(record["config_version"]),
        sync_status=record["sync_status"],
        rejected_version=record["rejected_version"],
        rejected_reason=record["rejected_reason"],
        last_error=record["last_error"],
        config_group=record["config_group"],
        cert_expiry=record["cert_expiry"],
        last_seen=record["last_seen"],
        updated_at=record["updated_at"],
    )


async def page(
    database: postgres.Database, *, size: int, after: str | None, purge_delay: int
) -> tuple[list[DataPlaneRow], str | None]:
    """One page ordered by id, keyset-paginated; returns the rows and the id to continue after."""
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=purge_delay)
    async with database.acquire() as conn:
        records = await conn.fetch(
            f"SELECT {_COLUMNS} FROM clustering_data_planes "
            "WHERE last_seen >= $1 AND ($2::uuid IS NULL OR id > $2::uuid) ORDER BY id LIMIT $3",
            since,
            after,
            size + 1,
        )
    rows = [_decode_row(r) for r in records[:size]]
    return rows, (rows[-1].id if len(records) > size else None)


async def all_rows(database: postgres.Database, *, purge_delay: int) -> list[DataPlaneRow]:
    rows: list[DataPlaneRow] = []
    after: str | None = None
    while True:
        batch, after = await page(database, size=1000, after=after, purge_delay=purge_delay)
        rows.extend(batch)
        if after is None:
            return rows


class DataPlaneCollector:
    """Subscribes to heartbeats and acks, keeps the latest per data plane, writes them in batches."""

    def __init__(
        self,
        database: postgres.Database,
        bus: BusConnection,
        names: Names,
        *,
        purge_delay: int,
        flush_interval: float = 1.0,
    ) -> None:
        self._db = database
        self._bus = bus
        self._names = names
        self._purge_delay = purge_delay
        self._flush_interval = flush_interval
        self._beats: dict[str, DataPlaneRow] = {}
        self._acks: dict[str, bus_pb2.Ack] = {}
        self._subscriptions: list[Any] = []
        self._task: asyncio.Task[None] | None = None
        self.received = 0
        self.flushed = 0

    async def on_connect(self) -> None:
        if self._subscriptions:
            return  # nats-py re-subscribes by itself after a reconnect
        nc = self._bus.client
        self._subscriptions = [
            await nc.subscribe(self._names.heartbeats, queue=CP_QUEUE_GROUP, cb=self._on_heartbeat),
            await nc.subscribe(self._names.acks, queue=CP_QUEUE_GROUP, cb=self._on_ack),
        ]

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="data-plane-collector")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.flush()
        except Exception as exc:  # closing with the database gone: nothing more to do
            log.warning("data_planes.final_flush_failed", error=repr(exc))

    async def _on_heartbeat(self, msg: Any) -> None:
        node_id = node_from_subject(msg.subject)
        try:
            beat = bus_pb2.Heartbeat.FromString(msg.data)
        except DecodeError:
            log.warning("data_planes.bad_heartbeat", subject=msg.subject)
            return
        # The subject is what the bus authorised; a body naming another node is not believed.
        if node_id is None or beat.node_id != node_id:
            log.warning("data_planes.node_mismatch", subject=msg.subject, node_id=beat.node_id)
            return
        self.received += 1
        self._beats[node_id] = row_from_heartbeat(beat, node_id, dt.datetime.now(dt.UTC))

    async def _on_ack(self, msg: Any) -> None:
        node_id = node_from_subject(msg.subject)
        try:
            ack = bus_pb2.Ack.FromString(msg.data)
        except DecodeError:
            log.warning("data_planes.bad_ack", subject=msg.subject)
            return
        if node_id is None or ack.node_id != node_id:
            log.warning("data_planes.node_mismatch", subject=msg.subject, node_id=ack.node_id)
            return
        self.received += 1
        # Debug, not info: one line per data plane per change is CP cost that grows with DPs.
        log.debug(
            "data_planes.ack",
            node_id=node_id,
            version=ack.version,
            applied=ack.applied,
            reason=ack.reason or None,
            serving=ack.serving_version,
        )
        pending = self._beats.get(node_id)
        if pending is not None:  # fold into the heartbeat not yet written
            self._beats[node_id] = _with_ack(pending, ack)
        else:
            self._acks[node_id] = ack

    async def flush(self) -> None:
        beats, self._beats = self._beats, {}
        acks, self._acks = self._acks, {}
        if not beats and not acks:
            return
        now = dt.datetime.now(dt.UTC)
        try:
            async with self._db.acquire() as conn, conn.transaction():
                if beats:
                    await conn.executemany(_UPSERT, [row.record() for row in beats.values()])
                if acks:
                    await conn.executemany(
                        _ACK_UPDATE, [_ack_record(node, ack, now) for node, ack in acks.items()]
                    )
        except Exception:
            # Keep what failed for the next flush, unless newer messages replaced it meanwhile.
            for node, row in beats.items():
                self._beats.setdefault(node, row)
            for node, ack in acks.items():
                self._acks.setdefault(node, ack)
            raise
        self.flushed += len(beats) + len(acks)

    async def purge(self) -> int:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self._purge_delay)
        async with self._db.acquire() as conn:
            status = await conn.execute("DELETE FROM clustering_data_planes WHERE last_seen < $1", since)
        removed = int(status.split()[-1]) if status.startswith("DELETE") else 0
        if removed:
            log.info("data_planes.purged", removed=removed)
        return removed

    async def _run(self) -> None:
        last_purge = 0.0
        while True:
            await asyncio.sleep(self._flush_interval)
            try:
                await self.flush()
                if time.monotonic() - last_purge > PURGE_EVERY_SECONDS:
                    await self.purge()
                    last_purge = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("data_planes.flush_failed", error=repr(exc))


def _with_ack(row: DataPlaneRow, ack: bus_pb2.Ack) -> DataPlaneRow:
    return replace(
        row,
        config_hash=ack.serving_hash,
        config_version=int(ack.serving_version),
        sync_status=_status(ack.sync_status),
        rejected_version=None if ack.applied else (int(ack.version) or None),
        rejected_reason=None if ack.applied else ack.reason,
        last_error=None if ack.applied else (ack.reason or None),
    )


def _ack_record(node_id: str, ack: bus_pb2.Ack, now: dt.datetime) -> Sequence[Any]:
    return (
        node_id,
        ack.serving_hash,
        int(ack.serving_version),
        _status(ack.sync_status),
        None if ack.applied else (int(ack.version) or None),
        None if ack.applied else ack.reason,
        now,
    )
