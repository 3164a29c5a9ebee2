"""response-transformer's config (Kong's ``kong/plugins/response-transformer/schema.lua``, 3.8+
with ``rename.json``): entries are ``name:value``; ``json_types`` types the JSON values by
position (``boolean``, ``number`` or ``string``, the default)."""

from __future__ import annotations

import re
from typing import Final

from zonegate.core import fields as f

NAME: Final = "response-transformer"

_PAIR = re.compile(r"^([^:]+):*(.*)$", re.DOTALL)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]*$")
_COLON = f.matches(r"^[^:]+:.*$")


def split_pair(entry: str) -> tuple[str, str]:
    """``name:value`` as Kong splits it: at the first colon, further colons skipped."""
    match = _PAIR.match(entry)
    return (match.group(1), match.group(2)) if match else (entry, "")


def _header_rename(entry: str) -> str | None:
    name, value = split_pair(entry)
    for part in (name, value):
        if not _HEADER_NAME.match(part):
            return f"'{part}' is not a valid header"
    return None


def _header_value(entry: str) -> str | None:
    name, value = split_pair(entry)
    if not _HEADER_NAME.match(name):
        return f"'{name}' is not a valid header"
    if not value or not _HEADER_VALUE.match(value):
        return f"'{value}' is not a valid header"
    return None


def _list(element: f.Field, description: str) -> f.Field:
    return f.array(element, required=True, default=[], description=description)


def _json_types() -> f.Field:
    return _list(
        f.string(f.one_of("boolean", "number", "string")),
        "The JSON type of each json entry's value, by position: boolean, number or string.",
    )


def _values(action: str) -> f.Field:
    return f.record(
        ("json", _list(f.string(_COLON), f"name:value JSON properties to {action}.")),
        ("json_types", _json_types()),
        ("headers", _list(f.string(_COLON, _header_value), f"name:value headers to {action}.")),
        required=True,
        default={},
        description=f"Properties and headers to {action}.",
    )


CONFIG: Final = f.record(
    (
        "remove",
        f.record(
            ("json", _list(f.string(), "JSON properties to remove.")),
            ("headers", _list(f.string(), "Headers to remove.")),
            required=True,
            default={},
            description="Remove these, if present.",
        ),
    ),
    (
        "rename",
        f.record(
            ("json", _list(f.string(_COLON), "old:new JSON property names.")),
            ("headers", _list(f.string(_COLON, _header_rename), "old:new header names.")),
            required=True,
            default={},
            description="Rename these, keeping their values.",
        ),
    ),
    ("replace", _values("replace, if present")),
    ("add", _values("add, if not present")),
    ("append", _values("append to any value already there")),
    required=True,
    default={},
)
