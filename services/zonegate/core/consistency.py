"""The consistency check of a whole config: before a snapshot is published and before applied.

A snapshot is the contract between control and data planes (STYLE.md point 4): every reference
resolves (cheap: run on every publish and every apply). Schema validity of every entity (about
27 us an entity, 0.27 s at 10,000 routes) is not re-checked per change: the store validates each
write, and a snapshot's bytes are covered by the control plane's signature. A failure means a bug
or tampering: the snapshot must not go out, nor replace the running config.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

from zonegate.core.config import Config
from zonegate.core.config_delta import ConfigDelta
from zonegate.core.entities import KINDS, schema_for

MAX_PROBLEMS: Final = 20  # enough to diagnose; a broken 100k-entity payload must not flood the log


def problems(config: Config) -> list[str]:
    """Every foreign key that does not resolve (at most ``MAX_PROBLEMS``)."""
    return config.dangling_references()[:MAX_PROBLEMS]


@cache
def _referrers(kind: str) -> tuple[tuple[str, str], ...]:
    """(kind, field) of every foreign key that points at ``kind``."""
    return tuple(
        (child, name)
        for child in KINDS
        for name, spec in schema_for(child).foreign_keys()
        if spec.reference == kind
    )


def delta_problems(config: Config, delta: ConfigDelta) -> list[str]:
    """``problems(config)`` for a config made by applying ``delta`` to a consistent one: only the
    references the delta can have broken are looked at (those of the entities it upserts, and
    those pointing at the entities it deletes), so the cost follows the change, not the config."""
    found: list[str] = []
    ids: dict[str, set[str]] = {}

    def known(kind: str) -> set[str]:
        if kind not in ids:
            ids[kind] = {e["id"] for e in config.of(kind)}
        return ids[kind]

    for kind, entities in delta.upserts.items():
        for name, spec in schema_for(kind).foreign_keys():
            for entity in entities:
                ref: Any = entity.get(name)
                if ref is not None and ref.get("id") not in known(spec.reference):
                    found.append(f"{kind} {entity['id']}: {name} {ref.get('id')} does not exist")
    for kind, deleted in delta.deletes.items():
        gone = set(deleted) - known(kind)  # deleted, and not upserted again
        if not gone:
            continue
        for child, name in _referrers(kind):
            for entity in config.of(child):
                ref = entity.get(name)
                if ref is not None and ref.get("id") in gone:
                    found.append(f"{child} {entity['id']}: {name} {ref.get('id')} does not exist")
    return found[:MAX_PROBLEMS]
