"""A node's id: created on first start and kept in the prefix, so it survives restarts (as Kong's)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Final

from zonegate.core.fields import UUID_RE

NODE_ID_FILE: Final = "node_id"


def load_node_id(prefix: Path) -> str:
    path = prefix / NODE_ID_FILE
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if UUID_RE.match(existing):
        return existing.lower()
    node_id = str(uuid.uuid4())
    temporary = path.with_suffix(".tmp")
    temporary.write_text(node_id + "\n")
    temporary.replace(path)
    return node_id
