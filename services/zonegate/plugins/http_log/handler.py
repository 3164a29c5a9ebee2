"""http-log's handler: queue Kong's serialized entry in the log phase; a background task sends batches.

One ``BatchQueue`` per plugin instance and config in each proxy process (kept across config
reloads while the instance's config is unchanged, as Kong keys its queues), one aiohttp
``ClientSession`` per process. A batch of one goes as a JSON object, larger ones as a JSON array
(Kong's body). A status of 300 or more is a failure and is retried by the queue. The request
never waits for any of it. When the proxy process stops, what the queues hold is sent (for at most
``FLUSH_SECONDS``) and the client is closed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import structlog

from zonegate import __version__
from zonegate.plugins.api import Plugin, PluginContext, SharedIndexes
from zonegate.plugins.http_log.batch_queue import BatchQueue, Outbound

log = structlog.get_logger(__name__)

USER_AGENT: Final = f"zonegate-http-log/{__version__}"
FLUSH_SECONDS: Final = 2.0  # what a stopping process gives its queues

_OUTBOUND: Final = Outbound(USER_AGENT)


def queue_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """``queue`` with Kong's mapping of the deprecated ``queue_size`` and ``flush_timeout``."""
    settings = dict(config["queue"])
    if config.get("queue_size") and settings["max_batch_size"] == 1:
        settings["max_batch_size"] = config["queue_size"]
    if config.get("flush_timeout") is not None and settings["max_coalescing_delay"] == 1:
        settings["max_coalescing_delay"] = config["flush_timeout"]
    return settings


class HttpLog(Plugin):
    NAME = "http-log"
    PRIORITY = 12
    VERSION = __version__

    @classmethod
    async def close_worker(cls) -> None:
        await _OUTBOUND.close(FLUSH_SECONDS)

    def configure(self, shared: SharedIndexes) -> None:
        config = self.config
        self.endpoint: str = config["http_endpoint"]
        self.method: str = config["method"]
        self.headers = {**(config.get("headers") or {}), "Content-Type": config["content_type"]}
        self.timeout = aiohttp.ClientTimeout(total=config["timeout"] / 1000)
        self.settings = queue_settings(config)
        self.key = (self.id, json.dumps(config, sort_keys=True, default=str))

    def _queue(self) -> BatchQueue:
        return _OUTBOUND.queue(self.key, f"http-log:{self.id}", self.settings, self._send)

    async def _send(self, batch: list[Any]) -> None:
        body = json.dumps(batch[0] if self.settings["max_batch_size"] == 1 else batch, default=str)
        async with _OUTBOUND.client().request(
            self.method, self.endpoint, data=body.encode(), headers=self.headers, timeout=self.timeout
        ) as response:
            await response.read()
            if response.status >= 300:
                raise RuntimeError(f"{self.endpoint} answered {response.status}")

    def log(self, ctx: PluginContext) -> None:
        self._queue().put(ctx.serialize())
