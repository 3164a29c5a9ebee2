"""``zonegate migrations`` as real processes, the way operators and deploy scripts run it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.fixtures import PostgresDatabase
from zonegate.control_plane import migrations
from zonegate.control_plane import postgres as pg
from zonegate.control_plane.migrations import MIGRATIONS_LOCK_KEY
from zonegate.embedded.ports import free_port

ZONEGATE = Path(sys.executable).with_name("zonegate")


def environment(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZONEGATE_")}
    env["ZONEGATE_PG_DSN"] = dsn
    return env


def start(dsn: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(ZONEGATE), "migrations", *args],
        env=environment(dsn),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ZONEGATE), "migrations", *args],
        env=environment(dsn),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


async def _reset(dsn: str) -> None:
    conn = await pg.connect(dsn, connect_timeout=10)
    try:
        if not (await migrations.schema_state(conn)).needs_bootstrap:
            await migrations.reset(conn, lock_timeout=10)
    finally:
        await conn.close()


@pytest.fixture
def dsn(postgres: PostgresDatabase) -> str:
    """The module's database with every table dropped."""
    asyncio.run(_reset(postgres.dsn))
    return postgres.dsn


def test_bootstrap_list_status_up_finish_reset(dsn: str) -> None:
    listed_empty = run(dsn, "list")
    bootstrapped = run(dsn, "bootstrap")
    listed = run(dsn, "list")
    status = run(dsn, "status")
    upped = run(dsn, "up")
    finished = run(dsn, "finish")
    reset = run(dsn, "reset", "--yes")
    listed_after_reset = run(dsn, "list")

    assert (listed_empty.returncode, listed_empty.stdout.strip()) == (
        3,
        "Database needs bootstrapping; run 'zonegate migrations bootstrap'",
    )
    assert bootstrapped.returncode == 0, bootstrapped.stderr
    assert bootstrapped.stdout.splitlines() == [
        "Bootstrapping database...",
        "core migrated up to: 000_base (executed)",
        "core migrated up to: 001_clustering (executed)",
        "2 migrations processed",
        "Database is up-to-date",
    ]
    assert (listed.returncode, listed.stdout.strip()) == (
        0,
        "Executed migrations:\ncore: 000_base, 001_clustering",
    )
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["needs_bootstrap"] is False and document["up_to_date"] is True
    assert document["executed_migrations"] == {"core": ["000_base", "001_clustering"]}
    assert document["pending_migrations"] == {} and document["new_migrations"] == {}
    assert document["database"]["location"].endswith("/" + dsn.rsplit("/", 1)[1])
    assert (upped.returncode, upped.stdout.strip()) == (0, "Database is already up-to-date")
    assert (finished.returncode, finished.stdout.strip()) == (0, "No pending migrations to finish")
    assert reset.returncode == 0, reset.stderr
    assert reset.stdout.splitlines() == ["Resetting database...", "Database successfully reset"]
    assert listed_after_reset.returncode == 3


def finished(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_failures_are_one_line_and_exit_1(dsn: str) -> None:
    # Independent of the database's state: run them alongside the others.
    side = [
        start(dsn, "reset"),
        start(f"postgresql://zonegate@127.0.0.1:{free_port()}/zonegate", "status", "--db-timeout", "2"),
        start(dsn.rsplit("/", 1)[0] + "/zg_no_such_database", "list"),
    ]
    up_too_early = run(dsn, "up")
    run(dsn, "bootstrap")
    again = run(dsn, "bootstrap")
    unconfirmed, unreachable, no_database = (finished(p) for p in side)

    assert up_too_early.returncode == 1
    assert one_error_line(up_too_early.stderr) == (
        "error: cannot run migrations: database needs bootstrapping; run 'zonegate migrations bootstrap'"
    )
    assert again.returncode == 1
    assert one_error_line(again.stderr) == (
        "error: database already bootstrapped; run 'zonegate migrations up' to upgrade it"
    )
    assert unconfirmed.returncode == 1
    assert "--yes" in one_error_line(unconfirmed.stderr)
    assert unreachable.returncode == 1
    assert one_error_line(unreachable.stderr).startswith("error: cannot connect to PostgreSQL at 127.0.0.1:")
    assert "connection refused" in unreachable.stderr
    assert no_database.returncode == 1
    assert 'database "zg_no_such_database" does not exist' in one_error_line(no_database.stderr)


# Other sessions of this database that have asked for the migrations lock (they poll with
# pg_try_advisory_lock, so they show up as sessions that ran it, not as lock waiters).
_WAITING = """
SELECT count(*) FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> $1 AND query LIKE '%pg_try_advisory_lock%'
"""


@pytest.fixture
def lock_holder(dsn: str) -> Iterator[tuple[asyncio.AbstractEventLoop, pg.Connection]]:
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(pg.connect(dsn, connect_timeout=10))
    loop.run_until_complete(conn.execute("SELECT pg_advisory_lock($1)", MIGRATIONS_LOCK_KEY))
    try:
        yield loop, conn
    finally:
        loop.run_until_complete(conn.close())
        loop.close()


def test_two_migrators_at_once_bootstrap_once(
    dsn: str, lock_holder: tuple[asyncio.AbstractEventLoop, pg.Connection]
) -> None:
    loop, holder = lock_holder
    processes = [start(dsn, "bootstrap"), start(dsn, "bootstrap")]
    # Release the lock only once both are connected and polling for it.
    deadline = time.monotonic() + 30
    while loop.run_until_complete(holder.fetchval(_WAITING, holder.server_pid())) < 2:
        assert time.monotonic() < deadline, "the migrators never waited for the lock"
        assert all(p.poll() is None for p in processes), "a migrator did not wait for the lock"
        time.sleep(0.05)
    loop.run_until_complete(holder.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS_LOCK_KEY))

    outcomes = sorted((p.wait(timeout=60), *p.communicate()) for p in processes)

    (ok_code, ok_out, ok_err), (failed_code, _failed_out, failed_err) = outcomes
    assert ok_code == 0, ok_err
    assert "core migrated up to: 000_base (executed)" in ok_out
    assert failed_code == 1
    assert "already bootstrapped" in one_error_line(failed_err)
    status = json.loads(run(dsn, "status").stdout)
    assert status["executed_migrations"] == {"core": ["000_base", "001_clustering"]}


def test_a_migrator_gives_up_after_the_lock_timeout(
    dsn: str, lock_holder: tuple[asyncio.AbstractEventLoop, pg.Connection]
) -> None:
    waited = run(dsn, "bootstrap", "--lock-timeout", "0.5")

    assert waited.returncode == 1
    assert one_error_line(waited.stderr) == (
        "error: another node is performing database changes; gave up waiting after 0.5s (see --lock-timeout)"
    )


def test_settings_come_from_the_conf_file_too(dsn: str, tmp_path: Path) -> None:
    conf = tmp_path / "zonegate.conf"
    conf.write_text(f"# the database of this test\npg_dsn = {dsn}\npg_timeout = 5000\n")
    bad_conf = tmp_path / "bad.conf"
    bad_conf.write_text("pg_port = not-a-port\n")

    status = subprocess.run(
        [str(ZONEGATE), "migrations", "status", "-c", str(conf)],
        env={k: v for k, v in os.environ.items() if not k.startswith("ZONEGATE_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    bad = run(dsn, "list", "--conf", str(bad_conf))

    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["needs_bootstrap"] is True
    assert bad.returncode == 1
    assert "pg_port" in one_error_line(bad.stderr)
