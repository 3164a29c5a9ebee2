"""The consistency check of a whole config: run before a snapshot is published and before applied.

A snapshot is the contract between control and data planes (STYLE.md point 4): every entity
valid against its schema and every reference resolving. The control plane's store already
guarantees both, so a failure here means a bug or a tampered payload; either way the snapshot
must not go out (publisher) or replace the running config (data plane).
"""

from __future__ import annotations

import json
from typing import Final

from zonegate.core.config import Config
from zonegate.core.entities import schema_for

MAX_PROBLEMS: Final = 20  # enough to diagnose; a broken 100k-entity payload must not flood the log


def problems(config: Config) -> list[str]:
    found: list[str] = []
    for kind, entity in config:
        _, errors = schema_for(kind).check(entity)
        if errors:
            found.append(f"{kind} {entity.get('id')}: {json.dumps(errors, sort_keys=True)}")
            if len(found) >= MAX_PROBLEMS:
                return found
    found.extend(config.dangling_references()[: MAX_PROBLEMS - len(found)])
    return found
