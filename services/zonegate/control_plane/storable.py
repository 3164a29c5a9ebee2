"""Values PostgreSQL cannot store, found before they reach the store.

PostgreSQL's ``text`` and ``jsonb`` refuse the NUL character, and ``jsonb`` has no infinities or
NaN, while JSON and YAML inputs can carry both (``"\\u0000"``, ``1e400``, ``.inf``). The schema
lets them through (a string is a string), so without this check they would fail inside a write
as a database error. Callers turn a finding into a 400 naming the value's path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

NUL: Final = "must not contain NUL characters (\\u0000)"
NOT_FINITE: Final = "expected a finite number"

Path = tuple[str | int, ...]


def find_unstorable(value: Any, path: Path = ()) -> tuple[Path, str] | None:
    """The path and problem of the first value PostgreSQL could not store, or None."""
    if isinstance(value, str):
        return (path, NUL) if "\x00" in value else None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, NOT_FINITE)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                return (*path, key), NUL
            found = find_unstorable(item, (*path, str(key)))
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = find_unstorable(item, (*path, index))
            if found is not None:
                return found
    return None


def nested_error(path: Path, message: str) -> Any:
    """``message`` placed at ``path`` in Kong's nested error shape (lists padded with null)."""
    node: Any = message
    for part in reversed(path):
        if isinstance(part, int):
            padded: list[Any] = [None] * (part + 1)
            padded[part] = node
            node = padded
        else:
            node = {part: node}
    return node
