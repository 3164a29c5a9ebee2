"""request-size-limiting's config (Kong's ``kong/plugins/request-size-limiting/schema.lua``)."""

from __future__ import annotations

from typing import Final

from zonegate.core import fields as f

NAME: Final = "request-size-limiting"

# Kong's order: the first is the default.
SIZE_UNITS: Final = ("megabytes", "kilobytes", "bytes")

CONFIG: Final = f.record(
    (
        "allowed_payload_size",
        f.integer(
            default=128,
            description="Allowed request payload size, in size_unit (default 128 megabytes).",
        ),
    ),
    (
        "size_unit",
        f.string(
            f.one_of(*SIZE_UNITS),
            required=True,
            default=SIZE_UNITS[0],
            description="The unit of allowed_payload_size: megabytes, kilobytes or bytes.",
        ),
    ),
    (
        "require_content_length",
        f.boolean(
            required=True,
            default=False,
            description="Refuse (411) requests without a valid Content-Length, unless chunked.",
        ),
    ),
    required=True,
    default={},
)
