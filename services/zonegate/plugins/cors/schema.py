"""cors's config (Kong's ``kong/plugins/cors/schema.lua``): same fields, defaults and checks."""

from __future__ import annotations

import re
from typing import Final

from zonegate.core import fields as f
from zonegate.core import pcre

NAME: Final = "cors"
NO_CONSUMER: Final = True

METHODS: Final = ("GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT")


def _asterisk_or_regex(value: str) -> str | None:
    if value == "*":
        return None
    try:
        pcre.compile_pcre(value)
    except re.error:
        return f"'{value}' is not a valid regex"
    return None


CONFIG: Final = f.record(
    (
        "origins",
        f.array(
            f.string(_asterisk_or_regex),
            description="Allowed origins for Access-Control-Allow-Origin: `*`, exact origins or regexes.",
        ),
    ),
    ("headers", f.array(f.string(), description="Value of Access-Control-Allow-Headers.")),
    ("exposed_headers", f.array(f.string(), description="Value of Access-Control-Expose-Headers.")),
    (
        "methods",
        f.array(
            f.string(f.one_of(*METHODS)),
            default=list(METHODS),
            description="Value of Access-Control-Allow-Methods.",
        ),
    ),
    ("max_age", f.number(description="How long preflight results may be cached, in seconds.")),
    (
        "credentials",
        f.boolean(required=True, default=False, description="Send Access-Control-Allow-Credentials: true."),
    ),
    (
        "private_network",
        f.boolean(
            required=True,
            default=False,
            description="Send Access-Control-Allow-Private-Network: true when a preflight asks for it.",
        ),
    ),
    (
        "preflight_continue",
        f.boolean(required=True, default=False, description="Proxy OPTIONS preflights to the upstream."),
    ),
    (
        "allow_origin_absent",
        f.boolean(
            required=True,
            default=True,
            description="Add the CORS headers to responses to requests without an Origin header.",
        ),
    ),
    required=True,
    default={},
)
