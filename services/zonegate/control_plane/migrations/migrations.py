"""Schema migrations, run the way Kong runs them (``kong/cmd/utils/migrations.lua``).

A migration is a versioned SQL file in ``sql/``: ``NNN_name.sql`` is its *up* part and an optional
``NNN_name.teardown.sql`` its *teardown* part. ``up`` runs only the non-destructive up parts, so
nodes of the old and the new version can run side by side; ``finish`` then runs the teardowns
(drop the old column, ...). A migration whose up part ran but whose teardown did not is
*pending*; one the database has not seen at all is *new*. ``bootstrap`` runs everything on an
empty database in one transaction.

State lives in Kong's ``schema_meta`` table: one row per subsystem with the ``executed`` and
``pending`` migration names and the ``last_executed`` one.

Invariant: every command that changes the schema holds the session advisory lock
``MIGRATIONS_LOCK_KEY`` while it reads the state and acts on it, so two nodes never migrate at
once; the second waits (up to ``lock_timeout``), then sees the first one's result. Each
migration runs in one transaction together with its ``schema_meta`` update: it is either
recorded and applied, or neither.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import structlog

from zonegate.control_plane import postgres
from zonegate.control_plane.errors import SchemaNotReady

log = structlog.get_logger(__name__)

SUBSYSTEM: Final = "core"
META_KEY: Final = "schema_meta"
# Session advisory locks are keyed by one bigint: a fixed hash of a name nobody else would pick.
MIGRATIONS_LOCK_KEY: Final = int.from_bytes(
    hashlib.sha256(b"zonegate:migrations").digest()[:8], "big", signed=True
)
_NAME_RE: Final = re.compile(r"^(\d{3}_[a-z0-9_]+?)(\.teardown)?\.sql$")
_LOCK_POLL_SECONDS: Final = 0.1

Say = Callable[[str], None]


def _silent(_line: str) -> None:
    pass


class MigrationError(Exception):
    """A migration command cannot proceed; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    up: str
    teardown: str | None = None


def load_migrations() -> tuple[Migration, ...]:
    """Every migration shipped in ``sql/``, in name order."""
    ups: dict[str, str] = {}
    teardowns: dict[str, str] = {}
    directory = resources.files("zonegate.control_plane.migrations").joinpath("sql")
    for entry in directory.iterdir():
        match = _NAME_RE.match(entry.name)
        if match is None:
            continue
        target = teardowns if match.group(2) else ups
        target[match.group(1)] = entry.read_text(encoding="utf-8")
    orphans = sorted(set(teardowns) - set(ups))
    if orphans:
        raise MigrationError(f"teardown without an up migration: {', '.join(orphans)}")
    return tuple(Migration(name, ups[name], teardowns.get(name)) for name in sorted(ups))


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where the database stands against the migrations this code ships."""

    needs_bootstrap: bool
    executed: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    new: tuple[str, ...] = ()
    # Recorded in the database but unknown here: a newer Zonegate migrated it.
    unknown: tuple[str, ...] = ()
    last_executed: str | None = None

    @property
    def up_to_date(self) -> bool:
        return not self.needs_bootstrap and not self.new and not self.pending

    def blocking(self) -> list[str]:
        """Migrations whose up part this code needs and the database has not run.

        Pending teardowns do not block: between ``up`` and ``finish`` old and new nodes share the
        database, which is the point of running migrations in two phases.
        """
        return list(self.new)  # everything, when the database needs bootstrapping

    def as_json(self) -> dict[str, Any]:
        """The state as ``zonegate migrations status`` prints it (Kong's schema-state fields)."""

        def by_subsystem(names: tuple[str, ...]) -> dict[str, list[str]]:
            return {SUBSYSTEM: list(names)} if names else {}

        return {
            "needs_bootstrap": self.needs_bootstrap,
            "up_to_date": self.up_to_date,
            "executed_migrations": by_subsystem(self.executed),
            "pending_migrations": by_subsystem(self.pending),
            "new_migrations": by_subsystem(self.new),
            "unknown_migrations": by_subsystem(self.unknown),
            "last_executed": {SUBSYSTEM: self.last_executed} if self.last_executed else {},
        }


async def schema_state(
    conn: postgres.Connection, migrations: Sequence[Migration] | None = None
) -> SchemaState:
    known = [m.name for m in (migrations if migrations is not None else load_migrations())]
    if await conn.fetchval("SELECT to_regclass('schema_meta') IS NOT NULL") is not True:
        return SchemaState(needs_bootstrap=True, new=tuple(known))
    row = await conn.fetchrow(
        "SELECT last_executed, executed, pending FROM schema_meta WHERE key = $1 AND subsystem = $2",
        META_KEY,
        SUBSYSTEM,
    )
    executed_in_db: list[str] = list((row["executed"] if row else None) or [])
    pending_in_db: list[str] = list((row["pending"] if row else None) or [])
    return SchemaState(
        needs_bootstrap=False,
        executed=tuple(n for n in known if n in executed_in_db),
        pending=tuple(n for n in known if n in pending_in_db and n not in executed_in_db),
        new=tuple(n for n in known if n not in executed_in_db and n not in pending_in_db),
        unknown=tuple(n for n in [*executed_in_db, *pending_in_db] if n not in known),
        last_executed=row["last_executed"] if row else None,
    )


async def pending_migrations(
    conn: postgres.Connection, migrations: Sequence[Migration] | None = None
) -> list[str]:
    """What must run before a control plane may use this database: empty when it is ready.

    Kong once started a CP on a half-migrated database and pushed an empty config to every data
    plane (Kong issue #12861); a CP calls this (or ``check_schema``) and refuses to start instead.
    """
    return (await schema_state(conn, migrations)).blocking()


def not_ready_message(state: SchemaState) -> str | None:
    if state.needs_bootstrap:
        return "database needs bootstrapping; run 'zonegate migrations bootstrap'"
    if state.new:
        return f"database needs new migrations ({', '.join(state.new)}); run 'zonegate migrations up'"
    return None


async def check_schema(conn: postgres.Connection, migrations: Sequence[Migration] | None = None) -> None:
    """Raise ``SchemaNotReady`` with one line saying what to run, unless the schema is usable."""
    state = await schema_state(conn, migrations)
    message = not_ready_message(state)
    if message is not None:
        raise SchemaNotReady(message)
    if state.unknown:
        log.warning("migrations.unknown", migrations=list(state.unknown))


# -- the lock -----------------------------------------------------------------------------------------


@asynccontextmanager
async def migration_lock(conn: postgres.Connection, *, wait: float) -> AsyncIterator[None]:
    """Hold the migrations advisory lock, waiting up to ``wait`` seconds for another node."""
    deadline = time.monotonic() + wait
    waited = False
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATIONS_LOCK_KEY):
        if not waited:
            log.info("migrations.lock.waiting", wait=wait)
            waited = True
        if time.monotonic() >= deadline:
            raise MigrationError(
                f"another node is performing database changes; gave up waiting after {wait:g}s "
                "(see --lock-timeout)"
            )
        await asyncio.sleep(_LOCK_POLL_SECONDS)
    log.debug("migrations.lock.acquired", waited=waited)
    try:
        yield
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS_LOCK_KEY)


# -- running ------------------------------------------------------------------------------------------

_CREATE_SCHEMA_META: Final = """
CREATE TABLE IF NOT EXISTS schema_meta (
  key            text,
  subsystem      text,
  last_executed  text,
  executed       text[],
  pending        text[],
  PRIMARY KEY (key, subsystem)
)
"""

_RECORD_EXECUTED: Final = """
INSERT INTO schema_meta (key, subsystem, last_executed, executed, pending)
VALUES ($1, $2, $3, ARRAY[$3::text], ARRAY[]::text[])
ON CONFLICT (key, subsystem) DO UPDATE
   SET last_executed = EXCLUDED.last_executed,
       executed = array_append(array_remove(coalesce(schema_meta.executed, '{}'), $3), $3),
       pending = array_remove(coalesce(schema_meta.pending, '{}'), $3)
"""

_RECORD_PENDING: Final = """
INSERT INTO schema_meta (key, subsystem, last_executed, executed, pending)
VALUES ($1, $2, $3, ARRAY[]::text[], ARRAY[$3::text])
ON CONFLICT (key, subsystem) DO UPDATE
   SET last_executed = EXCLUDED.last_executed,
       pending = array_append(array_remove(coalesce(schema_meta.pending, '{}'), $3), $3)
"""

_RECORD_FINISHED: Final = """
UPDATE schema_meta
   SET executed = array_append(array_remove(coalesce(executed, '{}'), $3), $3),
       pending = array_remove(coalesce(pending, '{}'), $3)
 WHERE key = $1 AND subsystem = $2
"""


async def _run_up(conn: postgres.Connection, migration: Migration, *, with_teardown: bool) -> bool:
    """Run the up part (and the teardown when asked); True when the migration is now complete."""
    started = time.monotonic()
    await conn.execute(migration.up)
    complete = migration.teardown is None or with_teardown
    if migration.teardown is not None and with_teardown:
        await conn.execute(migration.teardown)
    record = _RECORD_EXECUTED if complete else _RECORD_PENDING
    await conn.execute(record, META_KEY, SUBSYSTEM, migration.name)
    log.info(
        "migrations.up",
        migration=migration.name,
        complete=complete,
        ms=round((time.monotonic() - started) * 1000, 1),
    )
    return complete


async def bootstrap(
    conn: postgres.Connection,
    *,
    lock_timeout: float,
    migrations: Sequence[Migration] | None = None,
    say: Say = _silent,
) -> list[str]:
    """Create ``schema_meta`` and run every migration, up and teardown, in one transaction."""
    chosen = tuple(migrations) if migrations is not None else load_migrations()
    async with migration_lock(conn, wait=lock_timeout):
        state = await schema_state(conn, chosen)
        if not state.needs_bootstrap:
            raise MigrationError("database already bootstrapped; run 'zonegate migrations up' to upgrade it")
        say("Bootstrapping database...")
        async with conn.transaction():
            await conn.execute(_CREATE_SCHEMA_META)
            for migration in chosen:
                await _run_up(conn, migration, with_teardown=True)
                say(f"{SUBSYSTEM} migrated up to: {migration.name} (executed)")
    say(f"{len(chosen)} migration{'s' if len(chosen) != 1 else ''} processed")
    say("Database is up-to-date")
    return [m.name for m in chosen]


@dataclass(frozen=True, slots=True)
class UpResult:
    executed: tuple[str, ...]  # complete after this run
    pending: tuple[str, ...]  # up part done, teardown left for ``finish``


async def up(
    conn: postgres.Connection,
    *,
    lock_timeout: float,
    migrations: Sequence[Migration] | None = None,
    say: Say = _silent,
) -> UpResult:
    """Run the up part of every new migration, each in its own transaction."""
    chosen = tuple(migrations) if migrations is not None else load_migrations()
    async with migration_lock(conn, wait=lock_timeout):
        state = await schema_state(conn, chosen)
        if state.needs_bootstrap:
            raise MigrationError(
                "cannot run migrations: database needs bootstrapping; run 'zonegate migrations bootstrap'"
            )
        if state.pending:
            names = ", ".join(state.pending)
            raise MigrationError(
                f"database has pending migrations ({names}); run 'zonegate migrations finish'"
            )
        if not state.new:
            say("Database is already up-to-date")
            return UpResult((), ())
        by_name = {m.name: m for m in chosen}
        executed: list[str] = []
        pending: list[str] = []
        for name in state.new:
            async with conn.transaction():
                complete = await _run_up(conn, by_name[name], with_teardown=False)
            (executed if complete else pending).append(name)
            say(f"{SUBSYSTEM} migrated up to: {name} ({'executed' if complete else 'pending'})")
    say(f"{len(state.new)} migration{'s' if len(state.new) != 1 else ''} processed")
    if pending:
        say("Database has pending migrations; run 'zonegate migrations finish' when ready")
    else:
        say("Database is up-to-date")
    return UpResult(tuple(executed), tuple(pending))


async def finish(
    conn: postgres.Connection,
    *,
    lock_timeout: float,
    migrations: Sequence[Migration] | None = None,
    say: Say = _silent,
) -> list[str]:
    """Run the teardown part of every pending migration, each in its own transaction."""
    chosen = tuple(migrations) if migrations is not None else load_migrations()
    async with migration_lock(conn, wait=lock_timeout):
        state = await schema_state(conn, chosen)
        if state.needs_bootstrap:
            raise MigrationError(
                "cannot run migrations: database needs bootstrapping; run 'zonegate migrations bootstrap'"
            )
        by_name = {m.name: m for m in chosen}
        for name in state.pending:
            teardown = by_name[name].teardown
            async with conn.transaction():
                if teardown is not None:
                    await conn.execute(teardown)
                await conn.execute(_RECORD_FINISHED, META_KEY, SUBSYSTEM, name)
            log.info("migrations.finished", migration=name)
            say(f"{SUBSYSTEM} migrated up to: {name} (executed)")
    if state.pending:
        say(f"{len(state.pending)} migration{'s' if len(state.pending) != 1 else ''} processed")
    else:
        say("No pending migrations to finish")
    if state.new:
        say("New migrations available; run 'zonegate migrations up' to proceed")
    return list(state.pending)


_DROP_EVERY_TABLE: Final = """
DO $$
DECLARE
  t record;
BEGIN
  FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() LOOP
    EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', t.tablename);
  END LOOP;
END
$$
"""


async def reset(conn: postgres.Connection, *, lock_timeout: float, say: Say = _silent) -> None:
    """Drop every table of the current schema, as Kong's reset does. Irreversible."""
    async with migration_lock(conn, wait=lock_timeout):
        if await conn.fetchval("SELECT to_regclass('schema_meta') IS NOT NULL") is not True:
            raise MigrationError("database not bootstrapped, nothing to reset")
        say("Resetting database...")
        async with conn.transaction():
            await conn.execute(_DROP_EVERY_TABLE)
    log.info("migrations.reset")
    say("Database successfully reset")
