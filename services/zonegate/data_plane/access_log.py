"""The access log: one JSON line per request (a canonical log line), written in batches.

Each line carries what an operator looks for first: request id, client, method, path,
status, route, service, target, latencies and bytes. Lines are rendered by structlog's JSON
renderer (the same encoding as every other Zonegate log) but written to a buffered file and
flushed about once a second, so logging costs the hot path one dict and one render.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import structlog

if TYPE_CHECKING:
    from zonegate.data_plane.exchange import Exchange

FLUSH_INTERVAL: Final = 1.0
FLUSH_BYTES: Final = 64 * 1024
# Kong's container images log to /dev/stdout. Reopening that path fails for a non-root process
# whose stdout is a pipe owned by root (docker's): the descriptor it already has is used instead.
STANDARD_STREAMS: Final = {Path("/dev/stdout"): 1, Path("/dev/stderr"): 2}


def _open(path: Path) -> IO[str]:
    descriptor = STANDARD_STREAMS.get(path)
    if descriptor is not None:
        return os.fdopen(os.dup(descriptor), "a", encoding="utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a", encoding="utf-8")


class AccessLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = _open(path)
        self._render = structlog.processors.JSONRenderer()
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    def write(self, exchange: Exchange) -> None:
        match = exchange.match
        route = match.route if match is not None else None
        service = exchange.service
        now = time.monotonic()
        upstream_ms = (
            int((exchange.upstream_first_byte - exchange.upstream_sent_at) * 1000)
            if exchange.upstream_first_byte
            else None
        )
        event: dict[str, Any] = {
            "timestamp": time.time(),
            "request_id": exchange.request_id,
            "client_ip": exchange.client.peer_ip,
            "method": exchange.method.decode("latin-1"),
            "path": exchange.path,
            "host": exchange.host,
            "status": exchange.status,
            "upstream_status": exchange.upstream_status or None,
            "route": {"id": route["id"], "name": route.get("name")} if route else None,
            "service": {"id": service.id, "name": service.name} if service else None,
            "target": exchange.last_target.target if exchange.last_target is not None else None,
            "latencies": {
                "request": int((now - exchange.started) * 1000),
                "proxy": int((exchange.upstream_sent_at - exchange.started) * 1000)
                if exchange.upstream_sent_at
                else None,
                "upstream": upstream_ms,
            },
            "bytes_in": exchange.body_bytes_in,
            "bytes_out": exchange.body_bytes_out,
        }
        rendered = self._render(None, "access", event)
        line = (rendered if isinstance(rendered, str) else rendered.decode()) + "\n"
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self._timed_flush)
            except RuntimeError:
                self.flush()

    def _timed_flush(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        if self._pending:
            self._file.write("".join(self._pending))
            self._file.flush()
            self._pending = []
            self._pending_bytes = 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        self._file.close()
