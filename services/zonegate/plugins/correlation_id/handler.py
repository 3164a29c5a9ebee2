"""correlation-id's handler: keep the client's id, or make one with the configured generator."""

from __future__ import annotations

import itertools
import os
import uuid

from zonegate import __version__
from zonegate.plugins.api import AccessResult, Plugin, PluginContext, SharedIndexes

_COUNTER = itertools.count(1)


class CorrelationId(Plugin):
    NAME = "correlation-id"
    PRIORITY = 100001
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        self.header_name: str = self.config["header_name"]
        self.generator: str = self.config["generator"]
        self.echo: bool = self.config["echo_downstream"]
        # Kong's uuid#counter: one uuid per worker, then a counter (cheap and unique per worker).
        self.worker_uuid = str(uuid.uuid4())

    def _generate(self, ctx: PluginContext) -> str:
        if self.generator == "uuid":
            return str(uuid.uuid4())
        if self.generator == "tracker":
            # Kong's tracker: server address, port, connection, time, pid and request id.
            return f"{ctx.request.request_id}-{os.getpid()}"
        return f"{self.worker_uuid}#{next(_COUNTER)}"

    def access(self, ctx: PluginContext) -> AccessResult:
        value = ctx.header(self.header_name)
        if not value:
            value = self._generate(ctx)
            ctx.set_header(self.header_name, value)
        if self.echo:
            ctx.set_response_header(self.header_name, value)
        return None
