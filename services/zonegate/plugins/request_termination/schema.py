"""request-termination's config (Kong's schema.lua): same fields, defaults and rules."""

from __future__ import annotations

from typing import Any, Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t
from zonegate.core.errors import ENTITY_KEY

NAME: Final = "request-termination"


def _present(value: Any) -> bool:
    return isinstance(value, str) and len(value) > 0


def _rules(config: dict[str, Any]) -> dict[str, Any]:
    message, body, content_type = config.get("message"), config.get("body"), config.get("content_type")
    if _present(message) and (_present(content_type) or _present(body)):
        return {ENTITY_KEY: ["message cannot be used with content_type or body"]}
    if _present(content_type) and not _present(body):
        return {ENTITY_KEY: ["content_type requires a body"]}
    if config.get("echo") and (_present(content_type) or _present(body)):
        return {ENTITY_KEY: ["echo cannot be used with content_type and body"]}
    if config.get("echo_trigger") is not None and not config.get("echo"):
        return {ENTITY_KEY: ["echo_trigger can only be used with echo"]}
    return {}


CONFIG: Final = f.record(
    (
        "status_code",
        f.integer(f.between(100, 599), default=503, description="The status code to answer with."),
    ),
    ("message", f.string(description="Sent as a JSON message body.")),
    ("content_type", f.string(description="Content type of body.")),
    ("body", f.string(description="The raw body to answer with.")),
    ("echo", f.boolean(required=True, default=False, description="Answer with the request itself.")),
    ("echo_trigger", t.header_name(description="Echo only when this header or query argument is present.")),
    required=True,
    default={},
    record_checks=(_rules,),
)
