"""request-size-limiting's handler (Kong's ``handler.lua``, same texts and statuses).

A Content-Length is checked at once. A body without one (chunked) is counted as it arrives and
refused the moment it grows past the limit; Kong reads it whole first, then checks. A client that
asked for ``Expect: 100-continue`` gets 417 instead of 413, as in Kong.
"""

from __future__ import annotations

from typing import Final

from zonegate import __version__
from zonegate.plugins.api import AccessResult, Exit, Plugin, PluginContext, SharedIndexes

EXCEEDED: Final = "Request size limit exceeded"
LENGTH_REQUIRED: Final = "A valid Content-Length header is required"
UNIT_BYTES: Final = {"bytes": 1, "kilobytes": 1024, "megabytes": 1048576}


def _number(text: str | None) -> float | None:
    """Lua's ``tonumber`` on a header value, for what a Content-Length can hold."""
    if text is None:
        return None
    try:
        return float(text.strip())
    except ValueError:
        return None


class RequestSizeLimiting(Plugin):
    NAME = "request-size-limiting"
    PRIORITY = 951
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        size = self.config.get("allowed_payload_size")
        # Kong multiplies a nil size too and fails; a null size here means no limit.
        self.allowed = None if size is None else size * UNIT_BYTES[self.config["size_unit"]]
        self.require_length: bool = self.config["require_content_length"]

    def access(self, ctx: PluginContext) -> AccessResult:
        status = 417 if (ctx.header("Expect") or "").strip().lower() == "100-continue" else 413
        length = _number(ctx.header("Content-Length"))
        if length is not None:
            return Exit(status, EXCEEDED) if self.allowed is not None and length > self.allowed else None
        if self.require_length and ctx.header_values("Transfer-Encoding") != ["chunked"]:
            return Exit(411, LENGTH_REQUIRED)
        if self.allowed is not None and not ctx.limit_request_body(self.allowed, status):
            return Exit(status, EXCEEDED)
        return None
