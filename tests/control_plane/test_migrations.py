"""Migrations in process: state, bootstrap, two-phase up/finish, the advisory lock, reset."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from harness.fixtures import PostgresDatabase
from zonegate.control_plane import migrations
from zonegate.control_plane import postgres as pg
from zonegate.control_plane.errors import SchemaNotReady
from zonegate.control_plane.migrations import MIGRATIONS_LOCK_KEY, Migration, MigrationError
from zonegate.control_plane.store import Store

BASE = migrations.load_migrations()
TWO_PHASE = Migration(
    "900_two_phase",
    up="CREATE TABLE two_phase_new (v text); INSERT INTO two_phase_new VALUES ('copied')",
    teardown="CREATE TABLE two_phase_finished (v text)",
)
NEW = Migration("901_new", up="CREATE TABLE new_one (v text)")
BROKEN = Migration("902_broken", up="CREATE TABLE half_done (v text); SELECT no_such_function()")


@pytest.fixture
async def conn(postgres: PostgresDatabase) -> AsyncIterator[pg.Connection]:
    """A connection to the module's database, emptied of every table first."""
    connection = await postgres_connect(postgres.dsn)
    try:
        if not (await migrations.schema_state(connection)).needs_bootstrap:
            await migrations.reset(connection, lock_timeout=5)
        yield connection
    finally:
        await connection.close()


async def postgres_connect(dsn: str) -> pg.Connection:
    return await pg.connect(dsn, connect_timeout=10)


SHIPPED = ["000_base", "001_clustering"]


async def table_exists(conn: pg.Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


def test_the_shipped_migrations() -> None:
    assert [m.name for m in BASE] == SHIPPED
    assert all(m.teardown is None for m in BASE)
    assert "CREATE TABLE revisions" in BASE[0].up
    assert "CREATE TABLE clustering_data_planes" in BASE[1].up


async def test_an_empty_database_needs_bootstrapping(conn: pg.Connection) -> None:
    state = await migrations.schema_state(conn)

    assert state.needs_bootstrap and state.new == tuple(SHIPPED) and not state.up_to_date
    assert await migrations.pending_migrations(conn) == SHIPPED
    with pytest.raises(
        SchemaNotReady, match=r"^database needs bootstrapping; run 'zonegate migrations bootstrap'$"
    ):
        await migrations.check_schema(conn)


async def test_bootstrap_runs_everything_and_records_it_like_kong(conn: pg.Connection) -> None:
    said: list[str] = []

    ran = await migrations.bootstrap(conn, lock_timeout=5, say=said.append)

    assert ran == SHIPPED
    assert said[-1] == "Database is up-to-date"
    row = await conn.fetchrow("SELECT key, subsystem, last_executed, executed, pending FROM schema_meta")
    assert row is not None
    assert tuple(row[i] for i in range(5)) == ("schema_meta", "core", SHIPPED[-1], SHIPPED, [])
    assert await migrations.pending_migrations(conn) == []
    await migrations.check_schema(conn)
    assert await conn.fetchval("SELECT version FROM config_state") == 0


async def test_bootstrap_of_a_bootstrapped_database_fails(conn: pg.Connection) -> None:
    await migrations.bootstrap(conn, lock_timeout=5)

    with pytest.raises(MigrationError, match=r"^database already bootstrapped; run 'zonegate migrations up'"):
        await migrations.bootstrap(conn, lock_timeout=5)


async def test_bootstrap_also_runs_teardowns(conn: pg.Connection) -> None:
    await migrations.bootstrap(conn, lock_timeout=5, migrations=[*BASE, TWO_PHASE])

    state = await migrations.schema_state(conn, [*BASE, TWO_PHASE])
    assert state.executed == (*SHIPPED, "900_two_phase") and state.up_to_date
    assert await table_exists(conn, "two_phase_finished")


async def test_two_phase_migration_up_then_finish(conn: pg.Connection, postgres: PostgresDatabase) -> None:
    await migrations.bootstrap(conn, lock_timeout=5)
    shipped = [*BASE, TWO_PHASE]

    result = await migrations.up(conn, lock_timeout=5, migrations=shipped)

    assert result == migrations.UpResult(executed=(), pending=("900_two_phase",))
    state = await migrations.schema_state(conn, shipped)
    assert state.pending == ("900_two_phase",) and not state.up_to_date
    assert await table_exists(conn, "two_phase_new") and not await table_exists(conn, "two_phase_finished")
    # Between up and finish old and new nodes share the database: nothing blocks a control plane.
    assert await migrations.pending_migrations(conn, shipped) == []
    async with Store.connect(postgres.dsn, timeout=5) as store:
        assert await store.config_version() == 0
    with pytest.raises(
        MigrationError, match=r"pending migrations \(900_two_phase\); run 'zonegate migrations finish'"
    ):
        await migrations.up(conn, lock_timeout=5, migrations=shipped)

    assert await migrations.finish(conn, lock_timeout=5, migrations=shipped) == ["900_two_phase"]

    state = await migrations.schema_state(conn, shipped)
    assert state.executed == (*SHIPPED, "900_two_phase") and state.pending == () and state.up_to_date
    assert await table_exists(conn, "two_phase_finished")
    assert await migrations.finish(conn, lock_timeout=5, migrations=shipped) == []


async def test_a_new_migration_blocks_the_control_plane_until_up(conn: pg.Connection) -> None:
    await migrations.bootstrap(conn, lock_timeout=5)
    shipped = [*BASE, NEW]

    assert await migrations.pending_migrations(conn, shipped) == ["901_new"]
    with pytest.raises(
        SchemaNotReady, match=r"^database needs new migrations \(901_new\); run 'zonegate migrations up'$"
    ):
        await migrations.check_schema(conn, shipped)

    result = await migrations.up(conn, lock_timeout=5, migrations=shipped)

    assert result.executed == ("901_new",)
    assert await migrations.pending_migrations(conn, shipped) == []
    assert (await migrations.up(conn, lock_timeout=5, migrations=shipped)) == migrations.UpResult((), ())


async def test_a_failing_migration_leaves_no_trace(conn: pg.Connection) -> None:
    await migrations.bootstrap(conn, lock_timeout=5)

    with pytest.raises(pg.QueryError, match="no_such_function"):
        await migrations.up(conn, lock_timeout=5, migrations=[*BASE, BROKEN])

    assert not await table_exists(conn, "half_done")
    assert (await migrations.schema_state(conn, [*BASE, BROKEN])).new == ("902_broken",)
    # The lock went with the failure: the next command does not wait.
    await migrations.up(conn, lock_timeout=0, migrations=BASE)


async def test_up_and_finish_need_a_bootstrapped_database(conn: pg.Connection) -> None:
    with pytest.raises(MigrationError, match="needs bootstrapping"):
        await migrations.up(conn, lock_timeout=5)
    with pytest.raises(MigrationError, match="needs bootstrapping"):
        await migrations.finish(conn, lock_timeout=5)
    with pytest.raises(MigrationError, match=r"^database not bootstrapped, nothing to reset$"):
        await migrations.reset(conn, lock_timeout=5)


async def test_reset_drops_every_table(conn: pg.Connection) -> None:
    await migrations.bootstrap(conn, lock_timeout=5)
    await conn.execute("CREATE TABLE left_behind (v text)")

    await migrations.reset(conn, lock_timeout=5)

    assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()") == 0
    assert (await migrations.schema_state(conn)).needs_bootstrap


async def test_two_concurrent_bootstraps_run_it_once(conn: pg.Connection, postgres: PostgresDatabase) -> None:
    # A third session holds the lock so both migrators are certainly waiting at the same time.
    first, second = await postgres_connect(postgres.dsn), await postgres_connect(postgres.dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATIONS_LOCK_KEY)
        runs = [asyncio.create_task(migrations.bootstrap(c, lock_timeout=10)) for c in (first, second)]
        await asyncio.sleep(0.3)
        assert not any(run.done() for run in runs)
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS_LOCK_KEY)

        results = await asyncio.gather(*runs, return_exceptions=True)
    finally:
        await first.close()
        await second.close()

    assert sorted(type(r).__name__ for r in results) == ["MigrationError", "list"]
    (error,) = [r for r in results if isinstance(r, BaseException)]
    assert "already bootstrapped" in str(error)
    assert (await migrations.schema_state(conn)).executed == tuple(SHIPPED)


async def test_a_held_lock_times_out_with_one_line(conn: pg.Connection, postgres: PostgresDatabase) -> None:
    holder = await postgres_connect(postgres.dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATIONS_LOCK_KEY)
        with pytest.raises(
            MigrationError, match=r"^another node is performing database changes; gave up waiting after 0.3s"
        ):
            await migrations.bootstrap(conn, lock_timeout=0.3)
    finally:
        await holder.close()

    assert (await migrations.schema_state(conn)).needs_bootstrap
