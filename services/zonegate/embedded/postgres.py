"""A real PostgreSQL server from pgserver's bundled binaries, listening on 127.0.0.1 and a free port.

We drive `initdb` and `postgres` ourselves instead of using pgserver's `PostgresServer`, which only
listens on a unix socket, and we never import the `pgserver` package: importing it runs platformdirs at
module level, which warns when XDG_RUNTIME_DIR is unset (an error under the tests' filterwarnings).

PostgreSQL refuses to run as root. As root we run initdb and postgres as the system user `zonegate-pg`
(created once, no home, no shell), own the data and socket directories by it, and make sure the bundled
binaries and libraries are readable and executable by others, as pgserver's own utils do.

Invariant: a data directory that already holds a cluster (PG_VERSION exists) is reused as is, so the local
stack keeps its state across restarts; `start()` never runs initdb over it.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import structlog

from zonegate.embedded._process import StartStop, log_tail, spawn, stop_process
from zonegate.embedded.ports import LOOPBACK, free_port

log = structlog.get_logger(__name__)

SUPERUSER: Final = "postgres"
OS_USER: Final = "zonegate-pg"
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_BIND_FAILURES = ("could not bind", "Address already in use", "could not create any TCP/IP sockets")
_PORT_ATTEMPTS = 3

_permissions_checked: set[Path] = set()
_user_lock = threading.Lock()


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be prepared, started or queried."""


def postgres_bin_dir() -> Path:
    """Where pgserver keeps its PostgreSQL binaries, found without importing pgserver (see module doc)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "pgserver is not installed; install the 'local' extra (pip install -e '.[local]') "
            "or point the tests at a server with ZONEGATE_TEST_PG_DSN"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise EmbeddedPostgresError(f"pgserver is installed but {bin_dir / 'postgres'} is missing")
    return bin_dir


def _child_env() -> dict[str, str]:
    # C messages so the bind-failure detection and error tails read the same everywhere; no PG* variables
    # from the caller's shell leaking into initdb or psql.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def dsn_with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def _check_database_name(name: str) -> None:
    if not _DB_NAME.match(name):
        raise ValueError(f"database name {name!r} must match {_DB_NAME.pattern}")


def run_sql(dsn: str, sql: str, *, bin_dir: Path | None = None, timeout: float = 60.0) -> str:
    """Run SQL with the bundled psql (sync and loop-agnostic, so sync fixtures can use it too)."""
    psql = (bin_dir or postgres_bin_dir()) / "psql"
    env = _child_env()
    env["PGCONNECT_TIMEOUT"] = "10"
    result = subprocess.run(
        [str(psql), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise EmbeddedPostgresError(
            f"psql failed ({result.returncode}) running {sql!r}: {result.stderr.strip()}"
        )
    return result.stdout


def create_database(server_dsn: str, name: str, *, bin_dir: Path | None = None) -> str:
    """Create database `name` on the server behind `server_dsn`; return a DSN for it."""
    _check_database_name(name)
    run_sql(server_dsn, f'CREATE DATABASE "{name}"', bin_dir=bin_dir)
    return dsn_with_database(server_dsn, name)


def drop_database(server_dsn: str, name: str, *, bin_dir: Path | None = None) -> None:
    """Drop database `name`, disconnecting whoever still uses it (WITH (FORCE) needs PostgreSQL 13+)."""
    _check_database_name(name)
    run_sql(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', bin_dir=bin_dir)


def _ensure_os_user(name: str) -> pwd.struct_passwd:
    with _user_lock:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        result = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            # Another process may have created it between our lookup and useradd (exit code 9).
            entry = pwd.getpwnam(name)
        except KeyError:
            raise EmbeddedPostgresError(
                f"PostgreSQL cannot run as root and creating system user {name!r} failed: "
                f"{result.stderr.strip() or result.returncode}"
            ) from None
        log.info("embedded.postgres.user_created", user=name, uid=entry.pw_uid)
        return entry


def _ensure_readable_by_others(root: Path) -> None:
    """Let a non-root user read and run everything under `root` (pgserver's utils do the same)."""
    if root in _permissions_checked or not root.exists():
        return
    rx = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    r = stat.S_IRGRP | stat.S_IROTH
    for ancestor in root.parents:
        mode = ancestor.stat().st_mode
        if mode & stat.S_IXOTH == 0:
            ancestor.chmod(mode | stat.S_IXGRP | stat.S_IXOTH)
    for dirpath, _dirnames, filenames in os.walk(root):
        directory = Path(dirpath)
        mode = directory.stat().st_mode
        if mode & rx != rx:
            directory.chmod(mode | rx)
        for filename in filenames:
            path = directory / filename
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            wanted = mode | r | (rx if mode & stat.S_IXUSR else 0)
            if wanted != mode:
                path.chmod(wanted)
    _permissions_checked.add(root)


def _check_traversable(path: Path, user: pwd.struct_passwd) -> None:
    """Fail early, naming the directory, when `user` could not reach `path` (postgres's error is vague)."""
    for ancestor in reversed(path.parents):
        st = ancestor.stat()
        if st.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid == user.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if st.st_mode & bit == 0:
            raise EmbeddedPostgresError(
                f"PostgreSQL runs as {user.pw_name!r} (root is refused) and cannot traverse {ancestor} "
                f"(mode {stat.filemode(st.st_mode)}); put the data directory elsewhere or chmod o+x it"
            )


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


class EmbeddedPostgres(StartStop):
    """One PostgreSQL server process on 127.0.0.1.

    `port=None` picks a free port at the first start and keeps it for later starts, so a restart in a
    test keeps the same DSN. `fsync=False` trades crash safety for speed (tests, not the local stack).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        fsync: bool = True,
        settings: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        bin_dir: Path | None = None,
        os_user: str = OS_USER,
    ) -> None:
        self.data_dir = data_dir.resolve()
        # Beside the data directory, not in it: initdb wants an empty directory.
        self.log_path = (log_path or self.data_dir.with_name(self.data_dir.name + ".log")).resolve()
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.os_user = os_user
        self._bin_dir = bin_dir
        self._port = port
        self._fixed_port = port is not None
        self._process: subprocess.Popen[bytes] | None = None
        self._socket_dir: Path | None = None

    # -- properties -----------------------------------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = postgres_bin_dir()
        return self._bin_dir

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL has no port until it is started")
        return self._port

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/postgres"

    def dsn_for(self, database: str) -> str:
        return dsn_with_database(self.dsn, database)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    # -- lifecycle ------------------------------------------------------------------------------------

    def _run_as(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        user = _ensure_os_user(self.os_user)
        pgserver_root = self.bin_dir.parent
        _ensure_readable_by_others(pgserver_root)
        # The binaries link libpq and friends from the wheel's pgserver.libs directory.
        _ensure_readable_by_others(pgserver_root.parent.parent / "pgserver.libs")
        return user

    def _initdb(self, user: pwd.struct_passwd | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if user is not None:
            _check_traversable(self.data_dir, user)
            _chown_tree(self.data_dir, user.pw_uid, user.pw_gid)
        argv = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "--auth=trust",
            f"--username={SUPERUSER}",
            "--encoding=UTF8",
            # C collation: deterministic ordering everywhere and no dependency on installed locales.
            "--locale=C",
            "--no-instructions",
        ]
        if not self.fsync:
            argv.append("--no-sync")
        started = time.monotonic()
        with open(self.log_path, "ab") as log_file:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                cwd="/",  # the pg user may not be able to read our working directory
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
                timeout=300,
                check=False,
            )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"initdb failed with exit code {result.returncode} for {self.data_dir}; "
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            )
        log.info(
            "embedded.postgres.initdb",
            data_dir=str(self.data_dir),
            seconds=round(time.monotonic() - started, 2),
        )

    def _server_argv(self, port: int, socket_dir: Path) -> list[str]:
        argv = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            LOOPBACK,
            "-p",
            str(port),
            "-k",
            str(socket_dir),
            "-c",
            "logging_collector=off",
        ]
        settings: dict[str, str] = {}
        if not self.fsync:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        settings.update(self.settings)
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def start(self) -> None:
        """initdb when needed, then start postgres and wait until it accepts connections."""
        if self.running:
            return
        user = self._run_as()
        if self.initialised:
            if user is not None:
                _check_traversable(self.data_dir, user)
                if self.data_dir.stat().st_uid != user.pw_uid:
                    _chown_tree(self.data_dir, user.pw_uid, user.pw_gid)
        else:
            self._initdb(user)
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if self._port is None:
                self._port = free_port()
            if self._start_once(user):
                return
            if self._fixed_port or attempt == _PORT_ATTEMPTS:
                break
            log.info("embedded.postgres.port_taken", port=self._port, attempt=attempt)
            self._port = None
        raise EmbeddedPostgresError(
            f"PostgreSQL could not bind 127.0.0.1:{self._port}; "
            f"log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def _start_once(self, user: pwd.struct_passwd | None) -> bool:
        """Start on `self._port`; False when the port was taken, raise on any other failure."""
        port = self.port
        # Unix socket paths are limited to ~107 bytes: keep the socket directory short, under /tmp.
        socket_dir = Path(tempfile.mkdtemp(prefix="zgpg-"))
        if user is not None:
            os.chown(socket_dir, user.pw_uid, user.pw_gid)
        self._socket_dir = socket_dir
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        started = time.monotonic()
        self._process = spawn(
            self._server_argv(port, socket_dir),
            log_path=self.log_path,
            env=_child_env(),
            user=user.pw_name if user else None,
            group=user.pw_gid if user else None,
            cwd=Path("/"),
        )
        try:
            self._wait_ready(started)
        except _ServerExited:
            self._cleanup_after_exit()
            text = self._log_since(log_offset)
            if any(marker in text for marker in _BIND_FAILURES):
                return False
            raise EmbeddedPostgresError(
                f"PostgreSQL exited during start-up; log {self.log_path}:\n{log_tail(self.log_path)}"
            ) from None
        except BaseException:
            self.stop()
            raise
        log.info(
            "embedded.postgres.started",
            port=port,
            pid=self.pid,
            data_dir=str(self.data_dir),
            seconds=round(time.monotonic() - started, 2),
        )
        return True

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(offset)
                return handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _wait_ready(self, started: float) -> None:
        assert self._process is not None
        deadline = started + self.start_timeout
        pg_isready = str(self.bin_dir / "pg_isready")
        argv = [
            pg_isready,
            "-q",
            "-h",
            LOOPBACK,
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-t",
            "1",
        ]
        while True:
            if self._process.poll() is not None:
                raise _ServerExited
            # pg_isready, not a bare TCP connect: the port opens before recovery finishes and the server
            # then answers "the database system is starting up".
            if subprocess.run(argv, env=_child_env(), check=False, timeout=10).returncode == 0:
                return
            if time.monotonic() >= deadline:
                raise EmbeddedPostgresError(
                    f"PostgreSQL did not accept connections on 127.0.0.1:{self.port} within "
                    f"{self.start_timeout:.0f}s; log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def _cleanup_after_exit(self) -> None:
        if self._process is not None:
            stop_process(self._process, first_signal=signal.SIGKILL, timeout=1, name="postgres")
            self._process = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit); SIGKILL after a timeout."""
        process = self._process
        if process is not None:
            code = stop_process(
                process, first_signal=signal.SIGINT, timeout=self.stop_timeout, name="postgres"
            )
            log.info("embedded.postgres.stopped", port=self._port, pid=process.pid, exit_code=code)
        self._cleanup_after_exit()

    # -- databases ------------------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create a database on this server; return its DSN."""
        return create_database(self.dsn, name, bin_dir=self.bin_dir)

    def drop_database(self, name: str) -> None:
        drop_database(self.dsn, name, bin_dir=self.bin_dir)

    def execute(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with psql and return its unaligned, tuples-only output."""
        return run_sql(self.dsn_for(database), sql, bin_dir=self.bin_dir)


class _ServerExited(Exception):
    """postgres exited while we waited for it (bad port, locked data dir, bad setting)."""
