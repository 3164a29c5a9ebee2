"""request-termination's handler (Kong's texts and defaults)."""

from __future__ import annotations

from typing import Final

from zonegate.plugins.api import AccessResult, Exit, Plugin, PluginContext

DEFAULT_RESPONSE: Final = {
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    500: "An unexpected error occurred",
    502: "Bad Gateway",
    503: "Service unavailable",
}


class RequestTermination(Plugin):
    NAME = "request-termination"
    PRIORITY = 2
    VERSION = "2.0.1"

    def access(self, ctx: PluginContext) -> AccessResult:
        config = self.config
        status: int = config["status_code"]
        message = config.get("message") or DEFAULT_RESPONSE.get(status)
        if config["echo"]:
            trigger = config.get("echo_trigger")
            if trigger and ctx.header(trigger) is None and trigger not in ctx.query:
                return None
            request = ctx.request
            return Exit(
                status,
                json={
                    "message": message,
                    "request": {
                        "scheme": request.scheme,
                        "method": request.method,
                        "path": request.path,
                        "headers": {
                            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers
                        },
                        "query": {k: v[0] if len(v) == 1 else v for k, v in ctx.query.items()},
                    },
                    "matched_route": dict(ctx.route),
                    "matched_service": dict(ctx.service) if ctx.service else None,
                },
            )
        body = config.get("body")
        if body is not None:
            return Exit(status, body=body.encode(), content_type=config.get("content_type"))
        return Exit(status, json={"message": message} if message else None)
