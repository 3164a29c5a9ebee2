"""file-log's config (Kong's ``kong/plugins/file-log/schema.lua``, 3.x): ``path``, ``reopen``;
``custom_fields_by_lua`` is refused when set (Zonegate runs no Lua)."""

from __future__ import annotations

from typing import Final

from zonegate.core import fields as f
from zonegate.plugins.http_log.schema import custom_fields_by_lua

NAME: Final = "file-log"

CONFIG: Final = f.record(
    (
        "path",
        f.string(
            f.matches(r"^[^*&%\\`]+$", "not a valid filename"),
            required=True,
            description="The file to append to (created if missing).",
        ),
    ),
    (
        "reopen",
        f.boolean(
            required=True,
            default=False,
            description="Close and reopen the file for every write (lets logrotate move it away).",
        ),
    ),
    ("custom_fields_by_lua", custom_fields_by_lua()),
    required=True,
    default={},
)
