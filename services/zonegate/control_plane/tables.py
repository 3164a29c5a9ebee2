"""How each entity kind is laid out in PostgreSQL, derived from its ``EntitySchema``.

One table per kind. Real columns hold what the database must enforce or index: the ``id``
(uuid primary key), the timestamps, every unique field, endpoint key and cache-key member (text),
every foreign key (``<field>_id uuid REFERENCES``), and ``tags`` (text[] under a GIN index).
Every other field lives in one ``entity`` jsonb column. The store never filters on those, the
schema that validates them lives in Python, and keeping them out of DDL means a new field with a
default needs no migration: a row that lacks it reads back with the field's default.

Invariant: the layout computed here matches ``migrations/sql/*.sql``, including the constraint
names the store translates errors from (``<kind>_pkey``, ``<kind>_<field>_key``,
``<kind>_<field>_fkey``, ``<kind>_cache_key``); ``tests/control_plane`` checks it against the live
catalog. Adding ``unique=True`` to a field therefore needs a migration, and the test says so.

No I/O here: this module turns entity dicts into column tuples and rows back into entity dicts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from zonegate.core.entities import BY_NAME, KINDS
from zonegate.core.fields import MISSING, Field
from zonegate.core.schema import TIMESTAMP_FIELDS, Entity, EntitySchema

OnDelete = Literal["restrict", "cascade"]


def quote(identifier: str) -> str:
    """A quoted SQL identifier (``group`` is a reserved word, and quoting everything is uniform)."""
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class ForeignColumn:
    field: str
    column: str  # <field>_id
    reference: str  # the referenced kind
    on_delete: OnDelete
    required: bool
    constraint: str  # <kind>_<field>_fkey


@dataclass(frozen=True, slots=True)
class UniqueConstraint:
    name: str
    fields: tuple[str, ...]  # entity fields, in the order Kong's error names them


@dataclass(frozen=True, slots=True)
class Table:
    kind: str
    schema: EntitySchema
    timestamps: tuple[str, ...]
    scalars: tuple[str, ...]
    foreign: tuple[ForeignColumn, ...]
    has_tags: bool
    json_fields: tuple[str, ...]
    unique: tuple[UniqueConstraint, ...]

    @property
    def name(self) -> str:
        return quote(self.kind)

    @property
    def pkey(self) -> str:
        return f"{self.kind}_pkey"

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names in storage order: what COPY and INSERT write, what SELECT reads."""
        tags = ("tags",) if self.has_tags else ()
        return (
            "id",
            *self.timestamps,
            *self.scalars,
            *(fk.column for fk in self.foreign),
            *tags,
            "entity",
        )

    def select_list(self, alias: str = "") -> str:
        """Columns as the decoder expects them: ids as text, timestamps as epoch seconds."""
        prefix = f"{alias}." if alias else ""
        parts = [f"{prefix}id::text"]
        parts += [f"floor(extract(epoch from {prefix}{quote(t)}))::bigint" for t in self.timestamps]
        parts += [f"{prefix}{quote(s)}" for s in self.scalars]
        parts += [f"{prefix}{quote(fk.column)}::text" for fk in self.foreign]
        if self.has_tags:
            parts.append(f"{prefix}tags")
        parts.append(f"{prefix}entity")
        return ", ".join(parts)

    def column_for(self, field: str) -> str:
        """The real column holding ``field`` (a scalar or a foreign key), for WHERE clauses."""
        if field in self.scalars:
            return quote(field)
        for fk in self.foreign:
            if fk.field == field:
                return quote(fk.column)
        raise ValueError(f"{self.kind}.{field} is not stored in its own column")

    def foreign_column(self, field: str) -> ForeignColumn:
        for fk in self.foreign:
            if fk.field == field:
                return fk
        raise ValueError(f"{self.kind}.{field} is not a foreign key")

    # -- entity <-> row -------------------------------------------------------------------------

    def record(
        self, entity: Mapping[str, Any], created: dt.datetime, updated: dt.datetime
    ) -> tuple[Any, ...]:
        """The column values for ``entity`` (its id already set), in ``columns`` order."""
        values: list[Any] = [entity["id"]]
        for stamp in self.timestamps:
            values.append(created if stamp == "created_at" else updated)
        values += [entity.get(s) for s in self.scalars]
        for fk in self.foreign:
            ref = entity.get(fk.field)
            values.append(ref["id"] if ref is not None else None)
        if self.has_tags:
            values.append(entity.get("tags"))
        values.append({name: entity.get(name) for name in self.json_fields})
        return tuple(values)

    def decoder(self) -> Callable[[Any], Entity]:
        """A function from a row of ``select_list()`` to the entity dict, fields in schema order."""
        index = {name: i for i, name in enumerate(self.columns)}
        # The select list renders timestamps and ids the way entities hold them, so the column
        # position is the value's position; only foreign keys and the jsonb need reshaping.
        sources: list[tuple[str, Literal["column", "foreign", "json"], int, Field]] = []
        for name, spec in self.schema.fields:
            if name == "id" or name in self.timestamps or name in self.scalars or name == "tags":
                sources.append((name, "column", index[name], spec))
            elif spec.kind == "foreign":
                sources.append((name, "foreign", index[self.foreign_column(name).column], spec))
            else:
                sources.append((name, "json", index["entity"], spec))
        entity_at = index["entity"]
        plan = tuple(sources)

        def decode(row: Any) -> Entity:
            stored: dict[str, Any] = row[entity_at]
            out: dict[str, Any] = {}
            for name, how, at, spec in plan:
                if how == "column":
                    out[name] = row[at]
                elif how == "foreign":
                    ref = row[at]
                    out[name] = {"id": ref} if ref is not None else None
                elif name in stored:
                    out[name] = stored[name]
                else:
                    out[name] = _default(spec)
            return out

        return decode


def _default(spec: Field) -> Any:
    """What a field added after the row was written reads as: its default, validated the way the
    schema validates an entity that leaves it out (so a record default gets its nested defaults)."""
    default = spec.default_value()
    if default is MISSING:
        return None
    normalized, error = spec.validate(default)
    return default if error is not None else normalized


def _foreign_columns(schema: EntitySchema) -> tuple[ForeignColumn, ...]:
    columns = []
    for name, spec in schema.foreign_keys():
        on_delete: OnDelete = spec.on_delete
        columns.append(
            ForeignColumn(
                field=name,
                column=f"{name}_id",
                reference=spec.reference,
                on_delete=on_delete,
                required=spec.required,
                constraint=f"{schema.name}_{name}_fkey",
            )
        )
    return tuple(columns)


def _scalars(schema: EntitySchema) -> tuple[str, ...]:
    wanted: list[str] = []
    for name, spec in schema.fields:
        if name == "id" or spec.kind == "foreign":
            continue
        if spec.unique or name == schema.endpoint_key or name in schema.cache_key:
            wanted.append(name)
    return tuple(wanted)


def table_for(schema: EntitySchema) -> Table:
    names = set(schema.field_names)
    timestamps = tuple(t for t in TIMESTAMP_FIELDS if t in names)
    scalars = _scalars(schema)
    foreign = _foreign_columns(schema)
    has_tags = "tags" in names
    in_columns = {"id", *timestamps, *scalars, *(fk.field for fk in foreign), "tags"}
    json_fields = tuple(n for n in schema.field_names if n not in in_columns)
    unique = [UniqueConstraint(f"{schema.name}_{n}_key", (n,)) for n in schema.unique_fields()]
    if schema.cache_key:
        # Kong names the cache-key fields in its 409 body sorted, as Lua's pretty-printer does.
        unique.append(UniqueConstraint(f"{schema.name}_cache_key", tuple(sorted(schema.cache_key))))
    return Table(
        kind=schema.name,
        schema=schema,
        timestamps=timestamps,
        scalars=scalars,
        foreign=foreign,
        has_tags=has_tags,
        json_fields=json_fields,
        unique=tuple(unique),
    )


TABLES: Final[dict[str, Table]] = {kind: table_for(BY_NAME[kind]) for kind in KINDS}


@dataclass(frozen=True, slots=True)
class Reference:
    """A foreign key seen from the referenced side: ``child.field`` points at the parent kind."""

    child: str
    field: str
    on_delete: OnDelete
    constraint: str


def references_to(kind: str) -> tuple[Reference, ...]:
    """Every foreign key, in any table, that points at ``kind``."""
    return tuple(
        Reference(table.kind, fk.field, fk.on_delete, fk.constraint)
        for table in TABLES.values()
        for fk in table.foreign
        if fk.reference == kind
    )


FOREIGN_BY_CONSTRAINT: Final[dict[str, tuple[Table, ForeignColumn]]] = {
    fk.constraint: (table, fk) for table in TABLES.values() for fk in table.foreign
}
UNIQUE_BY_CONSTRAINT: Final[dict[str, tuple[Table, UniqueConstraint]]] = {
    constraint.name: (table, constraint) for table in TABLES.values() for constraint in table.unique
}
