"""A second module gets a database of its own, and the other module's database is gone once it ends."""

from __future__ import annotations

import asyncpg

from harness import PostgresDatabase, PostgresServerInfo
from zonegate.embedded.postgres import run_sql


async def test_second_module_gets_its_own_empty_database(
    postgres: PostgresDatabase, postgres_server: PostgresServerInfo
) -> None:
    assert postgres.name.startswith("zg_test_harness_postgres_isolation_")
    connection = await asyncpg.connect(postgres.dsn)
    try:
        assert await connection.fetchval("SELECT current_database()") == postgres.name
        # Empty: nothing from any other module's database leaks in.
        assert await connection.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    finally:
        await connection.close()

    created = postgres_server.databases_created
    assert len(created) == len(set(created))
    existing = set(run_sql(postgres.server_dsn, "SELECT datname FROM pg_database").split())
    assert postgres.name in existing
    # Databases of modules that already finished were dropped at their module teardown.
    assert [name for name in created if name != postgres.name and name in existing] == []
