"""correlation-id's config (Kong's schema.lua): same fields and defaults (``Kong-Request-ID`` kept,
so clients and log pipelines built for Kong keep reading the same header)."""

from __future__ import annotations

from typing import Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t

NAME: Final = "correlation-id"

CONFIG: Final = f.record(
    ("header_name", t.header_name(default="Kong-Request-ID", description="The header to use.")),
    (
        "generator",
        f.string(
            f.one_of("uuid", "uuid#counter", "tracker"),
            required=True,
            default="uuid#counter",
            description="How ids are made.",
        ),
    ),
    (
        "echo_downstream",
        f.boolean(required=True, default=False, description="Send the id back to the client."),
    ),
    required=True,
    default={},
)
