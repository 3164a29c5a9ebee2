"""The postgres fixture hands each module its own database on a real PostgreSQL."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from harness import PostgresDatabase, PostgresServerInfo
from zonegate.embedded.postgres import OS_USER, EmbeddedPostgres, EmbeddedPostgresError, run_sql


async def test_asyncpg_create_insert_select(postgres: PostgresDatabase) -> None:
    connection = await asyncpg.connect(postgres.dsn)
    try:
        await connection.execute("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)")
        await connection.executemany("INSERT INTO items (name) VALUES ($1)", [("alpha",), ("beta",)])
        rows = await connection.fetch("SELECT id, name FROM items ORDER BY id")
        assert [(row["id"], row["name"]) for row in rows] == [(1, "alpha"), (2, "beta")]
        assert await connection.fetchval("SELECT current_database()") == postgres.name
    finally:
        await connection.close()


async def test_module_shares_its_database_between_tests(postgres: PostgresDatabase) -> None:
    # The table created by the previous test is still here: the database lives for the whole module.
    connection = await asyncpg.connect(postgres.dsn)
    try:
        assert await connection.fetchval("SELECT count(*) FROM items") == 2
    finally:
        await connection.close()


def test_database_is_fresh_and_unique(
    postgres: PostgresDatabase, postgres_server: PostgresServerInfo
) -> None:
    assert postgres.name.startswith("zg_test_harness_postgres_")
    assert postgres_server.databases_created.count(postgres.name) == 1
    listed = run_sql(
        postgres.server_dsn, "SELECT datname FROM pg_database WHERE datname LIKE 'zg\\_%'"
    ).split()
    assert postgres.name in listed


def test_server_runs_as_unprivileged_user(postgres_server: PostgresServerInfo) -> None:
    if postgres_server.embedded is None:
        pytest.skip("external PostgreSQL from ZONEGATE_TEST_PG_DSN")
    pid = postgres_server.embedded.pid
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    real_uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    expected = pwd.getpwnam(OS_USER).pw_uid if os.geteuid() == 0 else os.geteuid()
    assert real_uid == expected
    assert real_uid != 0


@pytest.fixture(scope="module")
def private_data_dir() -> Iterator[Path]:
    """A data directory for servers these tests stop and start (never the session's shared server)."""
    # mkdtemp + 0711, not tmp_path: as root the server runs as another user who must traverse the parents.
    base = Path(tempfile.mkdtemp(prefix="zonegate-pg-private-"))
    os.chmod(base, 0o711)
    try:
        yield base / "data"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_embedded_server_reuses_its_data_dir_across_restarts(private_data_dir: Path) -> None:
    server = EmbeddedPostgres(private_data_dir, fsync=False)
    try:
        with server:
            first_port = server.port
            server.execute("CREATE TABLE kept (value text); INSERT INTO kept VALUES ('survives')")
        assert not server.running
        version_file = server.data_dir / "PG_VERSION"
        initialised_at = version_file.stat().st_mtime_ns
        with server:
            assert server.port == first_port
            assert server.execute("SELECT value FROM kept").strip() == "survives"
            assert server.dsn == f"postgresql://postgres@127.0.0.1:{first_port}/postgres"
        assert version_file.stat().st_mtime_ns == initialised_at  # no second initdb
        assert "database system is ready" in server.log_path.read_text()
    finally:
        server.stop()


def test_start_failure_reports_the_server_log(private_data_dir: Path) -> None:
    server = EmbeddedPostgres(private_data_dir, fsync=False, settings={"shared_buffers": "not-a-size"})
    try:
        with pytest.raises(EmbeddedPostgresError, match="shared_buffers"):
            server.start()
        assert not server.running
    finally:
        server.stop()
