"""A config change as the entities it replaces and removes: what a delta snapshot carries.

A control plane moves its config forward by replacing only the entities that change (the
others stay the very same objects), so ``diff`` finds a change by identity first and compares
values only for the few entities that are new objects. ``apply`` is what a data plane does with
it: the config it serves, with those entities replaced and removed, kinds still sorted by id.
Invariant (property-tested): ``apply(a, diff(a, b)) == b`` for any two configs.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from zonegate.core.config import Config
from zonegate.core.entities import KINDS
from zonegate.core.schema import Entity


class DeltaError(ValueError):
    """A delta document that is not one (wrong shape, unknown kind, entity without an id)."""


@dataclass(frozen=True, slots=True)
class ConfigDelta:
    upserts: Mapping[str, tuple[Entity, ...]] = field(default_factory=dict)
    deletes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(map(len, self.upserts.values())) + sum(map(len, self.deletes.values()))

    def document(self) -> dict[str, Any]:
        return {
            "upserts": {kind: list(found) for kind, found in self.upserts.items()},
            "deletes": {kind: list(ids) for kind, ids in self.deletes.items()},
        }

    @classmethod
    def from_document(cls, document: Any) -> ConfigDelta:
        if not isinstance(document, dict) or set(document) != {"upserts", "deletes"}:
            raise DeltaError("a delta is an object with 'upserts' and 'deletes'")
        upserts = {kind: tuple(_entity(item) for item in items) for kind, items in _part(document, "upserts")}
        deletes = {
            kind: tuple(_entity_id(item) for item in items) for kind, items in _part(document, "deletes")
        }
        return cls(upserts, deletes)


@dataclass(frozen=True, slots=True)
class Change:
    """A delta together with the config it was applied to: a consumer that built something from
    ``base`` may rebuild only what the delta names, and can tell by identity that it is its base."""

    base: Config
    delta: ConfigDelta


def _part(document: dict[str, Any], name: str) -> list[tuple[str, list[Any]]]:
    part = document[name]
    if not isinstance(part, dict):
        raise DeltaError(f"'{name}' must be an object by entity kind")
    for kind, items in part.items():
        if kind not in KINDS or not isinstance(items, list):
            raise DeltaError(f"'{name}': {kind!r} is not an entity kind with a list")
    return list(part.items())


def _entity(item: Any) -> Entity:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise DeltaError("every upserted entity is an object with an 'id'")
    return item


def _entity_id(item: Any) -> str:
    if not isinstance(item, str):
        raise DeltaError("every deleted entity is given by its id")
    return item


def diff(before: Config, after: Config) -> ConfigDelta:
    """What turns ``before`` into ``after``."""
    upserts: dict[str, tuple[Entity, ...]] = {}
    deletes: dict[str, tuple[str, ...]] = {}
    for kind in KINDS:
        old, new = before.of(kind), after.of(kind)
        if old is new:
            continue
        old_by_id = {entity["id"]: entity for entity in old}
        changed = []
        for entity in new:
            previous = old_by_id.pop(entity["id"], None)
            if previous is not entity and previous != entity:
                changed.append(entity)
        if changed:
            upserts[kind] = tuple(changed)
        if old_by_id:
            deletes[kind] = tuple(old_by_id)
    return ConfigDelta(upserts, deletes)


def apply(config: Config, delta: ConfigDelta) -> Config:
    """``config`` with the delta's entities replaced and removed (unchanged entities shared)."""
    entities = dict(config.entities)
    for kind in set(delta.upserts) | set(delta.deletes):
        current = config.of(kind)
        upserts, deletes = delta.upserts.get(kind, ()), delta.deletes.get(kind, ())
        if (len(upserts) + len(deletes)) * _SPLICE_RATIO <= len(current):
            items = _spliced(current, upserts, deletes)
        else:
            by_id = {entity["id"]: entity for entity in current}
            for entity_id in deletes:
                by_id.pop(entity_id, None)
            for entity in upserts:
                by_id[entity["id"]] = entity
            items = sorted(by_id.values(), key=_by_id)
        if items:
            entities[kind] = tuple(items)
        else:
            entities.pop(kind, None)
    return Config({kind: entities[kind] for kind in KINDS if kind in entities})


# A change to fewer entities than one in this many of a kind is spliced into the sorted list
# (a binary search each: a few entities of 10,000 cost microseconds, not a re-sort).
_SPLICE_RATIO: Final = 16


def _spliced(
    current: tuple[Entity, ...], upserts: tuple[Entity, ...], deletes: tuple[str, ...]
) -> list[Entity]:
    """``current`` (sorted by id) without ``deletes`` and with ``upserts`` put in their places."""
    items = list(current)
    for entity_id in deletes:
        at = bisect.bisect_left(items, entity_id, key=_by_id)
        if at < len(items) and items[at]["id"] == entity_id:
            del items[at]
    for entity in upserts:
        entity_id = _by_id(entity)
        at = bisect.bisect_left(items, entity_id, key=_by_id)
        if at < len(items) and items[at]["id"] == entity_id:
            items[at] = entity
        else:
            items.insert(at, entity)
    return items


def _by_id(entity: Entity) -> str:
    return str(entity["id"])
