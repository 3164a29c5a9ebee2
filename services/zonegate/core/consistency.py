"""The consistency checks of a whole config: before a snapshot is published and before applied.

A snapshot is the contract between control and data planes (STYLE.md point 4): every reference
resolves (``problems``, cheap: run on every publish and every apply). Schema validity of every
entity (``schema_problems``, about 27 us an entity) is guaranteed by the store, which validates
each write, and a snapshot's bytes are covered by the control plane's signature; so it runs where
data did not come through that path (a cache written by an older version), not per change. A
failure means a bug or tampering: the snapshot must not go out, nor replace the running config.
"""

from __future__ import annotations

import json
from typing import Final

from zonegate.core.config import Config
from zonegate.core.entities import schema_for

MAX_PROBLEMS: Final = 20  # enough to diagnose; a broken 100k-entity payload must not flood the log


def problems(config: Config) -> list[str]:
    """Every foreign key that does not resolve (at most ``MAX_PROBLEMS``)."""
    return config.dangling_references()[:MAX_PROBLEMS]


def schema_problems(config: Config) -> list[str]:
    """Entities that fail their schema, then dangling references (at most ``MAX_PROBLEMS``)."""
    found: list[str] = []
    for kind, entity in config:
        _, errors = schema_for(kind).check(entity)
        if errors:
            found.append(f"{kind} {entity.get('id')}: {json.dumps(errors, sort_keys=True)}")
            if len(found) >= MAX_PROBLEMS:
                return found
    found.extend(config.dangling_references()[: MAX_PROBLEMS - len(found)])
    return found
