"""A data plane's heartbeat: who it is and what it serves, every ``cluster_heartbeat_interval``.

Heartbeats are plain NATS messages (no JetStream): a missed one is replaced by the next, and
each carries the whole state (applied version and hash, sync status, last refused version and
why), so the control plane's view heals from any lost ack. The first one goes out as soon as the
bus is up, so a new data plane shows in ``/clustering/data-planes`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog

from zonegate import __version__
from zonegate.bus.connection import BusConnection
from zonegate.bus.subjects import Names
from zonegate.bus.v1 import bus_pb2
from zonegate.data_plane.config_agent import SyncState

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Identity:
    node_id: str
    hostname: str
    labels: Mapping[str, str]
    plugins: Mapping[str, str]
    cert_expiry: int
    group: str


def local_address(server_url: str) -> str:
    """The address this host uses to reach the bus: what the control plane should show as ``ip``."""
    parts = urlsplit(server_url if "://" in server_url else f"nats://{server_url}")
    host = parts.hostname or "127.0.0.1"
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:  # connect() on UDP sends nothing
            probe.connect((host, parts.port or 4222))
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


class Heartbeats:
    def __init__(
        self, *, bus: BusConnection, names: Names, identity: Identity, state: SyncState, interval: float
    ) -> None:
        self._bus = bus
        self._names = names
        self._identity = identity
        self._state = state
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._ip = ""
        self.sent = 0

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="heartbeats")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def message(self) -> bus_pb2.Heartbeat:
        identity, state = self._identity, self._state
        return bus_pb2.Heartbeat(
            node_id=identity.node_id,
            hostname=identity.hostname,
            ip=self._ip,
            zonegate_version=__version__,
            labels=dict(identity.labels),
            config_version=state.version,
            config_hash=state.config_hash,
            plugins=dict(identity.plugins),
            cert_expiry=identity.cert_expiry,
            last_error=state.last_error or self._bus.last_error or state.cache_problem,
            sent_at_ms=int(time.time() * 1000),
            sync_status=state.status,
            rejected_version=state.rejected_version,
            group=identity.group,
            interval_seconds=max(1, round(self._interval)),
        )

    async def send_now(self) -> None:
        if not self._bus.is_connected:
            return
        if not self._ip:
            self._ip = await asyncio.to_thread(local_address, self._bus.options.servers[0])
        subject = self._names.heartbeat_subject(self._identity.node_id)
        await self._bus.client.publish(subject, self.message().SerializeToString())
        self.sent += 1

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._bus.wait_connected()
            try:
                await self.send_now()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("heartbeat.failed", error=repr(exc))
            await asyncio.sleep(self._interval)
