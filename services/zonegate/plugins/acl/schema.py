"""acl's config (Kong's ``kong/plugins/acl/schema.lua``, 3.8+): same fields, defaults and checks."""

from __future__ import annotations

from typing import Final

from zonegate.core import fields as f
from zonegate.core.schema import at_least_one_of, only_one_of

NAME: Final = "acl"
NO_CONSUMER: Final = True

CONFIG: Final = f.record(
    (
        "allow",
        f.array(
            f.string(),
            description="Groups allowed to use the service or route. One of allow or deny must be set.",
        ),
    ),
    (
        "deny",
        f.array(
            f.string(),
            description="Groups not allowed to use the service or route. One of allow or deny must be set.",
        ),
    ),
    (
        "hide_groups_header",
        f.boolean(
            required=True,
            default=False,
            description="Do not send X-Consumer-Groups (or X-Authenticated-Groups) to the upstream.",
        ),
    ),
    (
        "always_use_authenticated_groups",
        f.boolean(
            required=True,
            default=False,
            description="Use the groups an auth plugin authenticated even when a consumer is "
            "authenticated too (the consumer's own groups when there are none).",
        ),
    ),
    required=True,
    default={},
)

ENTITY_CHECKS: Final = (
    only_one_of("config.allow", "config.deny"),
    at_least_one_of("config.allow", "config.deny"),
)
