"""ip-restriction's config (Kong's ``kong/plugins/ip-restriction/schema.lua``, 3.x): same fields
and checks. ``status`` is a number as in Kong, but must be an HTTP status (Kong takes any number
and fails on the first refused request)."""

from __future__ import annotations

from typing import Any, Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t
from zonegate.core.schema import at_least_one_of

NAME: Final = "ip-restriction"


def _http_status(value: Any) -> str | None:
    if float(value).is_integer() and 100 <= value <= 599:
        return None
    return "value should be between 100 and 599"


CONFIG: Final = f.record(
    (
        "allow",
        f.array(t.ip_or_cidr, description="IPs or CIDR ranges to allow. One of allow or deny must be set."),
    ),
    (
        "deny",
        f.array(t.ip_or_cidr, description="IPs or CIDR ranges to deny. One of allow or deny must be set."),
    ),
    ("status", f.number(_http_status, description="The status of refused requests (default 403).")),
    (
        "message",
        f.string(description="The message of refused requests (default: Your IP address is not allowed)."),
    ),
    required=True,
    default={},
)

ENTITY_CHECKS: Final = (at_least_one_of("config.allow", "config.deny"),)
