"""The ``zonegate`` command.

Every failure a user can cause (a bad file, a bad setting, a wrong argument) ends as one line
on stderr and a non-zero exit, never a traceback: operators run this from scripts and CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn, TypeVar

import typer

from zonegate import __version__, compiled
from zonegate.cli_hybrid import hybrid_app, nats_app
from zonegate.cli_migrations import migrations_app
from zonegate.core import canonical, declarative
from zonegate.core.config import Config
from zonegate.core.errors import DeclarativeConfigError
from zonegate.settings import Settings, SettingsError, conf_path_from_env, load_settings

app = typer.Typer(
    name="zonegate",
    help="Zonegate: a Kong-compatible API gateway whose control and data planes talk over an mTLS NATS bus.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
config_app = typer.Typer(help="Declarative configuration files (Kong's format).", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(migrations_app, name="migrations")
app.add_typer(hybrid_app, name="hybrid")
app.add_typer(nats_app, name="nats")

T = TypeVar("T")


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


def read_config_file(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"{path}: no such file")
    except IsADirectoryError:
        fail(f"{path}: is a directory, expected a declarative config file")
    except UnicodeDecodeError:
        fail(f"{path}: not a UTF-8 text file")
    except OSError as exc:
        fail(f"{path}: cannot read: {exc.strerror}")
    return declarative.loads(text)


FileArg = Annotated[
    Path, typer.Argument(help="A declarative config file (YAML or JSON).", show_default=False)
]


@app.command()
def version(
    all_: Annotated[
        bool, typer.Option("--all", help="Also say whether the proxy's hot path runs compiled.")
    ] = False,
) -> None:
    """Print the Zonegate version."""
    typer.echo(__version__)
    if all_:
        typer.echo(compiled.summary())


@config_app.command("parse")
def config_parse(file: FileArg) -> None:
    """Validate FILE: print a summary of what it declares, or every error with its path in the file."""
    try:
        config = read_config_file(file)
    except DeclarativeConfigError as exc:
        lines = exc.lines()
        typer.echo(f"error: {file}: {len(lines)} error{'s' if len(lines) != 1 else ''}", err=True)
        for line in lines:
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(1) from None
    counts = {kind: n for kind, n in config.counts().items() if n}
    typer.echo(f"parse successful: {file}")
    width = max((len(k) for k in counts), default=0)
    for kind, count in counts.items():
        typer.echo(f"  {kind:<{width}}  {count}")
    typer.echo(f"  config_hash  {canonical.config_hash(config).config_hash}")


@config_app.command("hash")
def config_hash(
    file: FileArg,
    parts: Annotated[
        bool, typer.Option("--parts", help="Also print the sub-hash of each part, as JSON.")
    ] = False,
) -> None:
    """Print FILE's config_hash (32 hex characters; 32 zeros for an empty config)."""
    result = canonical.config_hash(_load_or_fail(file))
    if parts:
        typer.echo(json.dumps({"config_hash": result.config_hash, "hashes": result.hashes}, indent=2))
    else:
        typer.echo(result.config_hash)


@config_app.command("fmt")
def config_fmt(
    file: FileArg,
    nested: Annotated[bool, typer.Option("--nested/--flat", help="Nest children under parents.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Write JSON instead of YAML.")] = False,
) -> None:
    """Print FILE in canonical declarative form: every id, every default, sorted."""
    config = _load_or_fail(file)
    typer.echo(declarative.dumps(config, nested=nested, fmt="json" if as_json else "yaml"), nl=False)


ConfOption = Annotated[
    Path | None,
    typer.Option("--conf", "-c", help="A zonegate.conf file (also ZONEGATE_CONF).", show_default=False),
]


def settings_or_fail(conf: Path | None) -> Settings:
    try:
        return load_settings(os.environ, conf if conf is not None else conf_path_from_env(os.environ))
    except SettingsError as exc:
        fail(str(exc))


def database_settings(conf: Path | None, verbose: bool) -> Settings:
    """Settings for a command that works on the database; logs to stderr, quiet unless verbose."""
    import dataclasses

    from zonegate.logs import configure_logging

    settings = settings_or_fail(conf)
    if settings.database != "postgres":
        fail(f"this command needs database = postgres (database is {settings.database})")
    # stdout may carry the exported file; logs go to stderr, quiet unless asked for.
    configure_logging(settings if verbose else dataclasses.replace(settings, log_level="warn"))
    return settings


def _run_on_database(action: Coroutine[Any, Any, T]) -> T:
    from zonegate.control_plane.errors import StoreError

    try:
        return asyncio.run(action)
    except StoreError as exc:
        fail(str(exc))


VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log each step to stderr.")]


@config_app.command("db-import")
def config_db_import(file: FileArg, conf: ConfOption = None, verbose: VerboseOption = False) -> None:
    """Validate FILE completely, then make it the whole database content in one transaction.

    Nothing is written when any entity is invalid: every error is printed with its path in the file.
    """
    from zonegate.control_plane.transfer import import_config, unstorable_in

    settings = database_settings(conf, verbose)
    started = time.monotonic()
    try:
        config = read_config_file(file)
    except DeclarativeConfigError as exc:
        lines = exc.lines()
        typer.echo(
            f"error: {file}: {len(lines)} error{'s' if len(lines) != 1 else ''}; nothing imported", err=True
        )
        for line in lines:
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(1) from None
    problem = unstorable_in(config)
    if problem is not None:
        fail(f"{file}: {problem}; nothing imported")
    counts = {kind: n for kind, n in config.counts().items() if n}
    total = sum(counts.values())
    typer.echo(f"validated {total} entities in {time.monotonic() - started:.2f} s")
    version = _run_on_database(import_config(settings, config))
    width = max((len(k) for k in counts), default=0)
    for kind, count in counts.items():
        typer.echo(f"  {kind:<{width}}  {count}")
    typer.echo(f"imported {total} entities in {time.monotonic() - started:.2f} s (config version {version})")


@config_app.command("db-export")
def config_db_export(
    file: Annotated[
        str, typer.Argument(help="Where to write the declarative YAML; - for stdout.", show_default=False)
    ],
    conf: ConfOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Write the database's whole config as a declarative file (flat, Kong's format, no timestamps)."""
    from zonegate.control_plane.transfer import export_config

    settings = database_settings(conf, verbose)
    exported = _run_on_database(export_config(settings))
    summary = (
        f"exported {exported.entities} entities (config version {exported.version}, "
        f"config_hash {exported.config_hash})"
    )
    if file == "-":
        sys.stdout.write(exported.text)
        typer.echo(summary, err=True)
        return
    target = Path(file)
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        temporary.write_text(exported.text, encoding="utf-8")
        temporary.replace(target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        fail(f"{target}: cannot write: {exc.strerror or exc}")
    typer.echo(f"{summary} to {target}")


# Kong spells them ``kong config db_import`` and ``db_export``: those hands keep working.
config_app.command("db_import", hidden=True)(config_db_import)
config_app.command("db_export", hidden=True)(config_db_export)


def _port_option(name: str) -> Any:
    from zonegate.local_stack.ports import StackPorts

    return typer.Option(StackPorts.option(name), help=f"Port of {_PORT_HELP[name]}.")


_PORT_HELP: Final = {
    "nats": "the embedded nats-server (mTLS)",
    "pg": "the embedded PostgreSQL (unused when ZONEGATE_PG_* names a database)",
    "admin": "the control plane's Admin API",
    "proxy_a": "the proxy of the data plane in zone a",
    "proxy_b": "the proxy of the data plane in zone b",
    "status_a": "the Status API of the data plane in zone a",
    "status_b": "the Status API of the data plane in zone b",
    "upstream": "the demo upstream",
}


@app.command()
def up(
    conf: ConfOption = None,
    prefix: Annotated[
        Path | None, typer.Option(help="State directory (default: the prefix setting, .zonegate).")
    ] = None,
    nats_port: Annotated[int, _port_option("nats")] = 4222,
    pg_port: Annotated[int, _port_option("pg")] = 5432,
    admin_port: Annotated[int, _port_option("admin")] = 8001,
    proxy_a_port: Annotated[int, _port_option("proxy_a")] = 8000,
    proxy_b_port: Annotated[int, _port_option("proxy_b")] = 8010,
    status_a_port: Annotated[int, _port_option("status_a")] = 8100,
    status_b_port: Annotated[int, _port_option("status_b")] = 8110,
    upstream_port: Annotated[int, _port_option("upstream")] = 9000,
) -> None:
    """Start the local stack until Ctrl-C: embedded mTLS NATS and PostgreSQL, a control plane,
    data planes in zones a and b, a demo upstream and the sample config (key-auth, demo-key)."""
    from zonegate import local_stack  # the embedded servers are only needed here
    from zonegate.logs import configure_logging

    settings = settings_or_fail(conf)
    configure_logging(settings, at_least="warn")  # each server and node logs to <prefix>/logs
    ports = local_stack.StackPorts(
        nats_port,
        pg_port,
        admin_port,
        proxy_a_port,
        proxy_b_port,
        status_a_port,
        status_b_port,
        upstream_port,
    )
    options = local_stack.StackOptions(
        prefix or settings.prefix, ports, local_stack.external_database(settings)
    )
    # Ctrl-C and SIGTERM alike unwind through the stack's stop, at any point of start-up too.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with local_stack.LocalStack(options) as stack:
            typer.echo("\n".join(stack.summary()), nl=True)
            while True:
                time.sleep(1)
                stack.check_running()
    except local_stack.StackError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo("stopped")


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@app.command()
def start(conf: ConfOption = None) -> None:
    """Start a node in the role the settings give (ZONEGATE_ROLE), until SIGTERM or SIGINT."""
    import uvloop

    from zonegate.data_plane.node import DbLessNode
    from zonegate.logs import configure_logging
    from zonegate.process_control import StartError

    settings = settings_or_fail(conf)
    configure_logging(settings)
    if conf is not None:
        os.environ["ZONEGATE_CONF"] = str(conf.resolve())  # worker processes read the same file
    if settings.is_control_plane:
        from zonegate.control_plane.node import ControlPlaneNode

        control_plane = ControlPlaneNode(settings)
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(control_plane.run())
        except StartError as exc:
            fail(exc.lines[0] if exc.lines else "start-up failed")
        return
    node = DbLessNode(settings)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(node.run())
    except StartError as exc:
        if len(exc.lines) == 1:
            fail(exc.lines[0])
        for line in exc.lines:
            typer.echo(line if line.startswith("  ") else f"error: {line}", err=True)
        raise typer.Exit(1) from None


@app.command(hidden=True)
def worker() -> None:
    """A proxy worker process; started by the config agent, never by hand."""
    import uvloop

    from zonegate.data_plane.worker import run_worker
    from zonegate.logs import configure_logging

    settings = settings_or_fail(None)
    configure_logging(settings)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_worker(settings))


def _signal_node(conf: Path | None, signum: int, verb: str) -> None:
    import signal

    from zonegate.process_control import StartError, signal_running_node

    settings = settings_or_fail(conf)
    try:
        pid = signal_running_node(settings.prefix, signal.Signals(signum))
    except StartError as exc:
        fail(str(exc))
    typer.echo(f"{verb} sent to process {pid}")


@app.command()
def stop(conf: ConfOption = None) -> None:
    """Stop the node running in the prefix: it drains in-flight requests, then exits."""
    import signal

    _signal_node(conf, signal.SIGTERM, "stop")


@app.command()
def reload(conf: ConfOption = None) -> None:
    """Make the node running in the prefix re-read its declarative config (like SIGHUP)."""
    import signal

    _signal_node(conf, signal.SIGHUP, "reload")


def _load_or_fail(file: Path) -> Config:
    try:
        return read_config_file(file)
    except DeclarativeConfigError as exc:
        fail(f"{file}: invalid declarative config: " + "; ".join(exc.lines()))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning every expected failure into one line on stderr."""
    try:
        # Outside standalone mode, click returns the code of a ``typer.Exit`` instead of exiting.
        status = app(args=argv, standalone_mode=False)
        if isinstance(status, int) and status:
            sys.exit(status)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:
        # Usage errors (unknown command, missing argument): typer vendors click, whose
        # exception classes are private, so read the two attributes every one of them has.
        format_message = getattr(exc, "format_message", None)
        message = format_message() if callable(format_message) else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(message)
            sys.exit(0)
        print(f"error: {message} (see 'zonegate --help')", file=sys.stderr)
        sys.exit(int(getattr(exc, "exit_code", 2)))
