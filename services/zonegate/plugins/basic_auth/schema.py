"""basic-auth's config (Kong's ``kong/plugins/basic-auth/schema.lua``, 3.6+): same fields and defaults."""

from __future__ import annotations

from typing import Final

from zonegate.core import fields as f

NAME: Final = "basic-auth"
NO_CONSUMER: Final = True

CONFIG: Final = f.record(
    (
        "anonymous",
        f.string(description="Consumer id or username to use when authentication fails."),
    ),
    (
        "hide_credentials",
        f.boolean(
            required=True,
            default=False,
            description="Strip the Authorization (or Proxy-Authorization) header before proxying.",
        ),
    ),
    (
        "realm",
        f.string(
            required=True,
            default="service",
            description="The realm of the WWW-Authenticate header sent with every 401.",
        ),
    ),
    required=True,
    default={},
)
