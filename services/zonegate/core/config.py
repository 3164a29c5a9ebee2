"""The whole configuration as one value: every entity, flat, ids and foreign keys resolved.

A ``Config`` is what a declarative file, a database export and a snapshot all turn into.
Invariant: every entity is valid against its schema, every foreign key points at an entity
of the same config, and within a kind entities are sorted by id, so two equal configs have
equal canonical bytes. Entities are plain dicts for speed; treat them as read-only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from zonegate.core.entities import KINDS, schema_for
from zonegate.core.schema import Entity


@dataclass(frozen=True, slots=True)
class Config:
    entities: Mapping[str, tuple[Entity, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, entities: Mapping[str, list[Entity] | tuple[Entity, ...]]) -> Config:
        """Sort each kind by id and drop unknown or empty kinds."""
        ordered = {
            kind: tuple(sorted(entities[kind], key=lambda e: str(e["id"])))
            for kind in KINDS
            if entities.get(kind)
        }
        return cls(ordered)

    def of(self, kind: str) -> tuple[Entity, ...]:
        return self.entities.get(kind, ())

    def counts(self) -> dict[str, int]:
        return {kind: len(self.of(kind)) for kind in KINDS}

    def is_empty(self) -> bool:
        return not any(self.entities.values())

    def by_id(self, kind: str) -> dict[str, Entity]:
        return {e["id"]: e for e in self.of(kind)}

    def __iter__(self) -> Iterator[tuple[str, Entity]]:
        for kind in KINDS:
            for entity in self.of(kind):
                yield kind, entity

    def dangling_references(self) -> list[str]:
        """Every foreign key that does not resolve: the consistency check before publish and apply."""
        ids = {kind: {e["id"] for e in self.of(kind)} for kind in KINDS}
        problems: list[str] = []
        for kind, entity in self:
            for name, spec in schema_for(kind).foreign_keys():
                ref: Any = entity.get(name)
                if ref is not None and ref.get("id") not in ids.get(spec.reference, set()):
                    problems.append(f"{kind} {entity['id']}: {name} {ref.get('id')} does not exist")
        return problems
