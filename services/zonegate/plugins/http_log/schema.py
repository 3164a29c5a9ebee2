"""http-log's config (Kong's ``kong/plugins/http-log/schema.lua`` with ``typedefs.queue``, 3.x):
same fields and defaults.

Kong's deprecated ``retry_count``, ``queue_size`` and ``flush_timeout`` are accepted (the last two
map to ``queue.max_batch_size`` and ``queue.max_coalescing_delay`` as Kong maps them).
``custom_fields_by_lua`` is refused when set: Zonegate runs no Lua.
"""

from __future__ import annotations

from typing import Any, Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t

NAME: Final = "http-log"

NO_LUA: Final = "custom_fields_by_lua is not supported by Zonegate: it runs no Lua"


def _no_lua(value: Any) -> str | None:
    return NO_LUA if value else None


def custom_fields_by_lua() -> f.Field:
    return f.map_of(
        f.string(),
        f.string(_no_lua),  # maps run no validators of their own: each value is refused
        description="Kong's Lua-computed log fields: refused when set (Zonegate runs no Lua).",
    )


QUEUE: Final = f.record(
    (
        "max_batch_size",
        f.integer(f.between(1, 1_000_000), required=True, default=1, description="Entries per request."),
    ),
    (
        "max_coalescing_delay",
        f.number(
            f.between(0, 3600),
            required=True,
            default=1,
            description="Seconds to wait for more entries before sending a partial batch.",
        ),
    ),
    (
        "max_entries",
        f.integer(
            f.between(1, 1_000_000),
            required=True,
            default=10000,
            description="Entries held at most; past it the oldest are dropped.",
        ),
    ),
    ("max_bytes", f.integer(description="Kong's byte bound on string entries: accepted, not used.")),
    (
        "max_retry_time",
        f.number(required=True, default=60, description="Seconds a batch is retried before it is dropped."),
    ),
    (
        "initial_retry_delay",
        f.number(
            f.between(0.001, 1_000_000),
            required=True,
            default=0.01,
            description="Seconds before the first retry; doubled each time.",
        ),
    ),
    (
        "max_retry_delay",
        f.number(
            f.between(0.001, 1_000_000),
            required=True,
            default=60,
            description="Longest wait between two retries, in seconds.",
        ),
    ),
    (
        "concurrency_limit",
        f.integer(
            f.one_of(-1, 1),
            required=True,
            default=1,
            description="1: one batch in flight; -1: no queue, each batch sent at once.",
        ),
    ),
    required=True,
    default={},
)

CONFIG: Final = f.record(
    ("http_endpoint", t.url(required=True, description="Where batches are sent (userinfo: basic auth).")),
    (
        "method",
        f.string(f.one_of("POST", "PUT", "PATCH"), default="POST", description="The HTTP method."),
    ),
    (
        "content_type",
        f.string(
            f.one_of("application/json", "application/json; charset=utf-8"),
            default="application/json",
            description="The Content-Type of the requests.",
        ),
    ),
    ("timeout", f.number(default=10000, description="Milliseconds a send may take.")),
    ("keepalive", f.number(default=60000, description="Milliseconds an idle connection is kept.")),
    ("retry_count", f.integer(description="Deprecated in Kong: ignored (see queue.max_retry_time).")),
    ("queue_size", f.integer(description="Deprecated in Kong: queue.max_batch_size.")),
    ("flush_timeout", f.number(description="Deprecated in Kong: queue.max_coalescing_delay.")),
    (
        "headers",
        f.map_of(t.header_name(), f.string(), description="Headers added to every request."),
    ),
    ("queue", QUEUE),
    ("custom_fields_by_lua", custom_fields_by_lua()),
    required=True,
    default={},
)
