"""Fixtures for the control plane's store: a bootstrapped database per module, emptied per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from harness.fixtures import PostgresDatabase
from zonegate.control_plane import migrations, postgres
from zonegate.control_plane.store import Store
from zonegate.core.entities import KINDS, schema_for


def entity(kind: str, **fields: Any) -> dict[str, Any]:
    """A validated entity, as the Admin API would hand it to the store."""
    return schema_for(kind).validate(fields)


def ref(stored: Mapping[str, Any]) -> dict[str, str]:
    return {"id": stored["id"]}


async def _bootstrap(dsn: str) -> None:
    conn = await postgres.connect(dsn, connect_timeout=10)
    try:
        if (await migrations.schema_state(conn)).needs_bootstrap:
            await migrations.bootstrap(conn, lock_timeout=10)
    finally:
        await conn.close()


async def empty_database(dsn: str) -> None:
    """Every entity and revision gone and the version back at 0: a freshly bootstrapped state."""
    conn = await postgres.connect(dsn, connect_timeout=10)
    try:
        tables = ", ".join(f'"{kind}"' for kind in KINDS)
        await conn.execute(f"TRUNCATE {tables}, revisions; UPDATE config_state SET version = 0")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def bootstrapped(postgres: PostgresDatabase) -> str:
    """The module's database, bootstrapped once; its DSN."""
    asyncio.run(_bootstrap(postgres.dsn))
    return postgres.dsn


@pytest.fixture
async def store(bootstrapped: str) -> AsyncIterator[Store]:
    await empty_database(bootstrapped)
    async with Store.connect(bootstrapped, timeout=10) as opened:
        yield opened
