"""The SQL of the migrations and the layout the store derives from the entity schemas agree.

The store names columns and translates constraint violations by name; this reads the live
catalog of a bootstrapped database and checks every table against ``tables.TABLES``. A field
made unique in ``zonegate.core`` without a migration fails here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zonegate.control_plane.postgres import connect
from zonegate.control_plane.tables import TABLES, Table

_COLUMNS = """
SELECT table_name::text, column_name::text, udt_name::text, is_nullable = 'YES'
  FROM information_schema.columns WHERE table_schema = current_schema()
"""
_CONSTRAINTS = """
SELECT c.conname::text, c.contype::text, c.conrelid::regclass::text, c.confrelid::regclass::text,
       c.confdeltype::text
  FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
 WHERE n.nspname = current_schema()
"""
_UNIQUE_INDEXES = """
SELECT indexrelid::regclass::text, indrelid::regclass::text
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE i.indisunique AND n.nspname = current_schema()
"""


async def _catalog(dsn: str) -> dict[str, Any]:
    conn = await connect(dsn, connect_timeout=5)
    try:
        return {
            "columns": [tuple(r[i] for i in range(4)) for r in await conn.fetch(_COLUMNS)],
            "constraints": [tuple(r[i] for i in range(5)) for r in await conn.fetch(_CONSTRAINTS)],
            "unique_indexes": [(r[0], r[1]) for r in await conn.fetch(_UNIQUE_INDEXES)],
        }
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def catalog(bootstrapped: str) -> dict[str, Any]:
    return asyncio.run(_catalog(bootstrapped))


def _expected_type(table: Table, column: str) -> str:
    if column == "id" or any(fk.column == column for fk in table.foreign):
        return "uuid"
    if column in ("created_at", "updated_at"):
        return "timestamptz"
    if column == "tags":
        return "_text"
    if column == "entity":
        return "jsonb"
    return "text"


@pytest.mark.parametrize("kind", list(TABLES))
def test_columns_match_the_layout(catalog: dict[str, Any], kind: str) -> None:
    table = TABLES[kind]
    columns = {name: (udt, nullable) for t, name, udt, nullable in catalog["columns"] if t == kind}

    assert set(columns) == set(table.columns)
    for column in table.columns:
        assert columns[column][0] == _expected_type(table, column), column
    for fk in table.foreign:
        assert columns[fk.column][1] is not fk.required, f"{fk.column} nullability"
    for name in table.scalars:
        assert columns[name][1] is not table.schema.field(name).required, f"{name} nullability"


@pytest.mark.parametrize("kind", list(TABLES))
def test_constraint_names_are_the_ones_the_store_translates(catalog: dict[str, Any], kind: str) -> None:
    table = TABLES[kind]
    constraints = {
        name: (type_, rel, ref, on_delete) for name, type_, rel, ref, on_delete in catalog["constraints"]
    }
    unique_indexes = {name for name, rel in catalog["unique_indexes"] if rel == kind}

    assert constraints[table.pkey][:2] == ("p", kind)
    for unique in table.unique:
        assert unique.name in unique_indexes, unique.name
    for fk in table.foreign:
        type_, rel, ref, on_delete = constraints[fk.constraint]
        assert (type_, rel, ref) == ("f", kind, fk.reference)
        assert on_delete == {"restrict": "r", "cascade": "c"}[fk.on_delete], fk.constraint
