"""key-auth's config (Kong's ``kong/plugins/key-auth/schema.lua``): same fields and defaults."""

from __future__ import annotations

from typing import Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t

NAME: Final = "key-auth"
NO_CONSUMER: Final = True

CONFIG: Final = f.record(
    (
        "key_names",
        f.array(
            t.header_name,
            required=True,
            default=["apikey"],
            description="Names of the header, query parameter or body field that carry the key.",
        ),
    ),
    (
        "hide_credentials",
        f.boolean(required=True, default=False, description="Strip the key before proxying."),
    ),
    ("anonymous", f.string(description="Consumer id or username to use when authentication fails.")),
    ("key_in_header", f.boolean(required=True, default=True, description="Look for the key in headers.")),
    ("key_in_query", f.boolean(required=True, default=True, description="Look for the key in the query.")),
    ("key_in_body", f.boolean(required=True, default=False, description="Look for the key in the body.")),
    (
        "run_on_preflight",
        f.boolean(required=True, default=True, description="Authenticate OPTIONS preflight requests too."),
    ),
    ("realm", f.string(description="The realm of the WWW-Authenticate header on a 401.")),
    required=True,
    default={},
)
