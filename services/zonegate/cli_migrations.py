"""``zonegate migrations``: prepare and upgrade the control plane's PostgreSQL schema.

The commands and their order are Kong's: ``bootstrap`` a new database, ``up`` then ``finish``
to upgrade (old and new nodes may share the database in between), ``list`` and ``status`` to
look, ``reset --yes`` to start over. ``list`` keeps Kong's exit codes, which deploy scripts test:
0 up to date, 3 needs bootstrap, 4 pending migrations to finish, 5 new migrations to run.

Every failure (unreachable database, already bootstrapped, another node holding the lock past
``--lock-timeout``) ends as one ``error: ...`` line and exit status 1, via ``zonegate.cli``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    # Imported inside the commands instead: every ``zonegate`` invocation loads this module, and
    # asyncpg costs a tenth of a second that only these commands need.
    from zonegate.control_plane import postgres
    from zonegate.control_plane.migrations import SchemaState
    from zonegate.settings import Settings

migrations_app = typer.Typer(
    help="Prepare and upgrade the PostgreSQL schema (Kong's 'kong migrations').",
    no_args_is_help=True,
)

T = TypeVar("T")

EXIT_NEEDS_BOOTSTRAP = 3
EXIT_PENDING = 4
EXIT_NEW = 5

ConfOption = Annotated[
    Path | None,
    typer.Option("--conf", "-c", help="A zonegate.conf file (also ZONEGATE_CONF).", show_default=False),
]
DbTimeoutOption = Annotated[
    float,
    typer.Option("--db-timeout", help="Seconds allowed to connect and for each statement.", min=0.1),
]
LockTimeoutOption = Annotated[
    float,
    typer.Option(
        "--lock-timeout", help="Seconds to wait for another node that is migrating the database.", min=0
    ),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log each step to stderr.")]


def _fail(message: str) -> NoReturn:
    # Imported here: zonegate.cli imports this module to register the sub-app.
    from zonegate.cli import CliError

    raise CliError(message)


def _settings(conf: Path | None, verbose: bool) -> Settings:
    from zonegate.cli import database_settings

    return database_settings(conf, verbose)


def _run(settings: Settings, db_timeout: float, action: Callable[[postgres.Connection], Awaitable[T]]) -> T:
    """Connect, run ``action`` on one connection (the advisory lock is per session), disconnect."""
    from zonegate.control_plane import migrations, postgres

    dsn = settings.postgres_dsn()

    async def main() -> T:
        conn = await postgres.connect(dsn, connect_timeout=db_timeout)
        try:
            return await action(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(main())
    except migrations.MigrationError as exc:
        _fail(str(exc))
    except postgres.Unavailable as exc:
        _fail(f"cannot connect to PostgreSQL at {postgres.describe_dsn(dsn)}: {exc}")
    except postgres.PostgresError as exc:
        _fail(f"PostgreSQL at {postgres.describe_dsn(dsn)}: {exc}")


def _say(line: str) -> None:
    typer.echo(line)


@migrations_app.command()
def bootstrap(
    conf: ConfOption = None,
    db_timeout: DbTimeoutOption = 60.0,
    lock_timeout: LockTimeoutOption = 60.0,
    verbose: VerboseOption = False,
) -> None:
    """Create the schema on an empty database and run every migration."""
    from zonegate.control_plane import migrations

    settings = _settings(conf, verbose)
    _run(settings, db_timeout, lambda c: migrations.bootstrap(c, lock_timeout=lock_timeout, say=_say))


@migrations_app.command()
def up(
    conf: ConfOption = None,
    db_timeout: DbTimeoutOption = 60.0,
    lock_timeout: LockTimeoutOption = 60.0,
    verbose: VerboseOption = False,
) -> None:
    """Run the new migrations' non-destructive part (old nodes keep working)."""
    from zonegate.control_plane import migrations

    settings = _settings(conf, verbose)
    _run(settings, db_timeout, lambda c: migrations.up(c, lock_timeout=lock_timeout, say=_say))


@migrations_app.command()
def finish(
    conf: ConfOption = None,
    db_timeout: DbTimeoutOption = 60.0,
    lock_timeout: LockTimeoutOption = 60.0,
    verbose: VerboseOption = False,
) -> None:
    """Run the pending migrations' teardown part, once no old node is left."""
    from zonegate.control_plane import migrations

    settings = _settings(conf, verbose)
    _run(settings, db_timeout, lambda c: migrations.finish(c, lock_timeout=lock_timeout, say=_say))


@migrations_app.command("list")
def list_(
    conf: ConfOption = None,
    db_timeout: DbTimeoutOption = 60.0,
    verbose: VerboseOption = False,
) -> None:
    """List executed, pending and new migrations (exit 3, 4 or 5 when something is left to run)."""
    from zonegate.control_plane import migrations

    settings = _settings(conf, verbose)
    state = _run(settings, db_timeout, migrations.schema_state)
    if state.needs_bootstrap:
        typer.echo("Database needs bootstrapping; run 'zonegate migrations bootstrap'")
        raise typer.Exit(EXIT_NEEDS_BOOTSTRAP)
    sections = (
        ("Executed migrations:", state.executed),
        ("Pending migrations:", state.pending),
        ("New migrations available:", state.new),
    )
    blocks = [f"{title}\n{migrations.SUBSYSTEM}: {', '.join(names)}" for title, names in sections if names]
    if blocks:
        typer.echo("\n\n".join(blocks))
    if state.unknown:
        typer.echo(
            f"\nUnknown to this Zonegate (a newer version migrated the database): {', '.join(state.unknown)}"
        )
    if state.pending:
        typer.echo("\nRun 'zonegate migrations finish' when ready")
        raise typer.Exit(EXIT_PENDING)
    if state.new:
        typer.echo("\nRun 'zonegate migrations up' to proceed")
        raise typer.Exit(EXIT_NEW)


@migrations_app.command()
def status(
    conf: ConfOption = None,
    db_timeout: DbTimeoutOption = 60.0,
    verbose: VerboseOption = False,
) -> None:
    """Print the schema state as JSON (executed, pending and new migrations per subsystem)."""
    from zonegate.control_plane import migrations, postgres

    settings = _settings(conf, verbose)
    dsn = settings.postgres_dsn()

    async def read(conn: postgres.Connection) -> tuple[SchemaState, str]:
        return await migrations.schema_state(conn), conn.server_version()

    state, server_version = _run(settings, db_timeout, read)
    document = state.as_json()
    document["database"] = {"location": postgres.describe_dsn(dsn), "server_version": server_version}
    typer.echo(json.dumps(document, indent=2))


@migrations_app.command()
def reset(
    conf: ConfOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Confirm: drop every table. Irreversible.")
    ] = False,
    db_timeout: DbTimeoutOption = 60.0,
    lock_timeout: LockTimeoutOption = 60.0,
    verbose: VerboseOption = False,
) -> None:
    """Drop every table of the database's current schema (asks for --yes)."""
    if not yes:
        _fail("reset drops every table and cannot be undone; run it with --yes to confirm")
    from zonegate.control_plane import migrations

    settings = _settings(conf, verbose)
    _run(settings, db_timeout, lambda c: migrations.reset(c, lock_timeout=lock_timeout, say=_say))
