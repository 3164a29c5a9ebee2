"""Config-change notifications: LISTEN zonegate_config, kept alive through outages.

Every store write ends with ``NOTIFY zonegate_config, '<version>'``. PostgreSQL drops
notifications for a listener that is not connected, and a connection can die without anyone
noticing (a cut link with no TCP reset). So a notification is only the fast path: the listener
also reads ``config_state.version`` on its own connection every ``poll_interval`` seconds, which
both catches a missed change and proves the connection alive, and after any reconnect it reads
the version at once.

Invariant: the callback sees strictly increasing versions, each one committed; it may skip
versions (a burst of writes can arrive as its last version only), which suits a publisher that
always reads the latest snapshot anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self

import structlog

from zonegate.control_plane import postgres
from zonegate.control_plane.errors import StoreUnavailable

log = structlog.get_logger(__name__)

CHANNEL: Final = "zonegate_config"
VersionCallback = Callable[[int], None]

_MAX_BACKOFF_SECONDS: Final = 10.0


class ConfigListener:
    """Calls ``callback(version)`` for each new committed config version. Use ``async with``."""

    def __init__(
        self,
        dsn: str,
        callback: VersionCallback,
        *,
        timeout: float,
        poll_interval: float = 5.0,
        max_backoff: float = _MAX_BACKOFF_SECONDS,
    ) -> None:
        self._dsn = dsn
        self._callback = callback
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._conn: postgres.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last = -1
        self.reconnects = 0

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend serving the LISTEN, while connected (for diagnostics and tests)."""
        conn = self._conn
        return conn.server_pid() if conn is not None and not conn.is_closed() else None

    @property
    def last_version(self) -> int:
        """The last version handed to the callback (-1 before the first)."""
        return self._last

    async def start(self) -> None:
        """Connect and LISTEN; raises ``StoreUnavailable`` if PostgreSQL cannot be reached now."""
        try:
            await self._connect()
        except postgres.PostgresError as exc:
            raise StoreUnavailable(f"cannot listen for config changes: {exc}") from exc
        self._task = asyncio.create_task(self._supervise(), name="zonegate-config-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- internals ---------------------------------------------------------------------------------

    def _deliver(self, version: int) -> None:
        if version <= self._last:
            return
        self._last = version
        try:
            self._callback(version)
        except Exception:
            # The callback is the publisher's; its bug must not stop notifications for good.
            log.exception("store.listener.callback_failed", version=version)

    def _on_notify(self, payload: str) -> None:
        try:
            version = int(payload)
        except ValueError:
            log.warning("store.listener.bad_payload", payload=payload[:64])
            return
        self._deliver(version)

    async def _connect(self) -> None:
        conn = await postgres.connect(self._dsn, connect_timeout=self._timeout)
        self._conn = conn
        self._lost.clear()
        conn.on_termination(lambda: self._connection_lost(conn))
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
            # Read the version only once LISTEN is in place: a write committed in between is then
            # seen by one or the other, never by neither.
            version = await conn.fetchval("SELECT version FROM config_state")
        except BaseException:
            await self._disconnect()
            raise
        if version is not None:
            self._deliver(int(version))

    def _connection_lost(self, conn: postgres.Connection) -> None:
        # Only the current connection counts: closing an old one must not trigger a reconnect.
        if conn is self._conn:
            self._lost.set()

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()

    async def _poll(self) -> None:
        conn = self._conn
        if conn is None or conn.is_closed():
            raise postgres.Unavailable("connection closed")
        version = await conn.fetchval("SELECT version FROM config_state", query_timeout=self._timeout)
        if version is not None:
            self._deliver(int(version))

    async def _supervise(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), timeout=self._poll_interval)
            except TimeoutError:
                try:
                    await self._poll()
                    continue
                except postgres.PostgresError as exc:
                    log.warning("store.listener.poll_failed", error=str(exc))
            log.warning("store.listener.connection_lost")
            await self._disconnect()
            await self._reconnect()

    async def _reconnect(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._connect()
            except postgres.PostgresError as exc:
                # Capped exponential backoff with full jitter: many CPs restarting with one
                # database must not reconnect in lockstep.
                pause = random.uniform(0, delay)
                log.info("store.listener.reconnect_failed", error=str(exc), retry_in=round(pause, 2))
                await asyncio.sleep(pause)
                delay = min(delay * 2, self._max_backoff)
                continue
            self.reconnects += 1
            log.info("store.listener.reconnected", version=self._last)
            return
