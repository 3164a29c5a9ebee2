"""PostgreSQL through asyncpg, behind a small typed surface.

asyncpg ships no type information, so this module is the only one that touches it: everything
else sees ``Database`` (a pool), ``Connection`` and the errors below. asyncpg's exceptions never
leave this module either: constraint violations become ``IntegrityError`` (with the constraint
name the store maps to Kong's error bodies), everything that means "the database is not there or
not answering" becomes ``Unavailable``, anything else ``QueryError``.

jsonb travels in binary form and is encoded and decoded with msgspec, which is several times
faster than the json module on the 100k-entity paths (replace_all, export).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, Final, Literal, Protocol
from urllib.parse import urlsplit

import asyncpg
import msgspec
import structlog

log = structlog.get_logger(__name__)

Isolation = Literal["read_committed", "repeatable_read", "serializable"]

_JSONB_VERSION: Final = b"\x01"
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class Row(Protocol):
    """A result row: by position (fast paths) or by column name."""

    def __getitem__(self, key: int | str, /) -> Any: ...


# -- errors -------------------------------------------------------------------------------------


class PostgresError(Exception):
    """Base of what this module raises."""


class Unavailable(PostgresError):
    """The server cannot be reached, refused us, went away, or did not answer in time."""


class QueryError(PostgresError):
    """PostgreSQL rejected a statement for a reason other than a constraint (a bug, or a missing table)."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class IntegrityError(PostgresError):
    """A unique, foreign-key, not-null or check constraint was violated."""

    def __init__(
        self,
        kind: Literal["unique", "foreign_key", "not_null", "check"],
        constraint: str | None,
        table: str | None,
        detail: str | None,
        message: str,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.constraint = constraint
        self.table = table
        self.detail = detail


_INTEGRITY: Final[dict[str, Literal["unique", "foreign_key", "not_null", "check"]]] = {
    "23505": "unique",
    "23503": "foreign_key",
    "23502": "not_null",
    "23514": "check",
}
# Class 08 (connection exception), 53 (insufficient resources), 57P0x (shutdown, cannot connect
# now), 3D000 (no such database), 28xxx (authentication): retrying later or fixing settings helps;
# the statement itself was fine.
_UNAVAILABLE_PREFIXES: Final = ("08", "53", "57P", "3D", "28")


def describe_dsn(dsn: str) -> str:
    """``host:port/database`` for messages: never the password, never the whole URL."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "the configured PostgreSQL"
    database = parts.path.lstrip("/") or "postgres"
    return f"{host}:{port}/{database}"


def translate(exc: BaseException) -> PostgresError | None:
    """The typed error for an asyncpg/OS exception, or None when it is not a database failure."""
    if isinstance(exc, PostgresError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        message = str(exc)
        if sqlstate in _INTEGRITY:
            return IntegrityError(
                _INTEGRITY[sqlstate],
                getattr(exc, "constraint_name", None),
                getattr(exc, "table_name", None),
                getattr(exc, "detail", None),
                message,
            )
        if sqlstate.startswith(_UNAVAILABLE_PREFIXES) or sqlstate == "55P03":
            return Unavailable(message)
        if sqlstate == "57014":  # query_canceled: statement_timeout or a cancel request
            return Unavailable("the query was canceled (timeout)")
        return QueryError(message, sqlstate or None)
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.exceptions.ConnectionDoesNotExistError):
        return Unavailable(str(exc) or type(exc).__name__)
    if isinstance(exc, TimeoutError):
        return Unavailable("timed out")
    if isinstance(exc, ConnectionRefusedError):
        return Unavailable("connection refused")
    if isinstance(exc, OSError):
        return Unavailable(exc.strerror or str(exc))
    return None


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # CancelledError is a BaseException and passes through untouched
        typed = translate(exc)
        if typed is None or typed is exc:
            raise
        raise typed from exc


# -- connections --------------------------------------------------------------------------------


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_VERSION + _encoder.encode(value)


def _decode_jsonb(data: bytes) -> Any:
    return _decoder.decode(memoryview(data)[1:])


async def _init_connection(raw: Any) -> None:
    await raw.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )


class Connection:
    """One server connection (from the pool or on its own), with typed, translated calls."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    async def execute(self, sql: str, *args: Any, query_timeout: float | None = None) -> str:
        with _translated():
            status: str = await self._raw.execute(sql, *args, timeout=query_timeout)
            return status

    async def fetch(self, sql: str, *args: Any, query_timeout: float | None = None) -> list[Row]:
        with _translated():
            rows: list[Row] = await self._raw.fetch(sql, *args, timeout=query_timeout)
            return rows

    async def fetchrow(self, sql: str, *args: Any, query_timeout: float | None = None) -> Row | None:
        with _translated():
            row: Row | None = await self._raw.fetchrow(sql, *args, timeout=query_timeout)
            return row

    async def fetchval(self, sql: str, *args: Any, query_timeout: float | None = None) -> Any:
        with _translated():
            return await self._raw.fetchval(sql, *args, timeout=query_timeout)

    async def executemany(
        self, sql: str, args: Iterable[Sequence[Any]], query_timeout: float | None = None
    ) -> None:
        with _translated():
            await self._raw.executemany(sql, args, timeout=query_timeout)

    async def copy_records(
        self,
        table: str,
        columns: Sequence[str],
        records: Iterable[Sequence[Any]],
        *,
        query_timeout: float | None = None,
    ) -> None:
        """COPY rows in binary: the fastest way in, by far (see ops/bench/store_bench.py)."""
        with _translated():
            await self._raw.copy_records_to_table(
                table, records=records, columns=list(columns), timeout=query_timeout
            )

    @contextlib.asynccontextmanager
    async def transaction(
        self, *, isolation: Isolation = "read_committed", readonly: bool = False
    ) -> AsyncIterator[None]:
        with _translated():
            async with self._raw.transaction(isolation=isolation, readonly=readonly):
                yield

    async def add_listener(self, channel: str, callback: Callable[[str], None]) -> None:
        def deliver(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
            callback(payload)

        with _translated():
            await self._raw.add_listener(channel, deliver)

    def on_termination(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once if the connection dies (the server restarts, the link is cut)."""
        self._raw.add_termination_listener(lambda _connection: callback())

    def server_pid(self) -> int:
        """The backend's process id (what ``pg_stat_activity.pid`` shows)."""
        return int(self._raw.get_server_pid())

    def is_closed(self) -> bool:
        return bool(self._raw.is_closed())

    def server_version(self) -> str:
        info = self._raw.get_server_version()
        # asyncpg reads "16.2" as major 16, micro 2 (the numbering changed in PostgreSQL 10).
        return f"{info.major}.{info.micro if info.major >= 10 else info.minor}"

    async def close(self, grace: float = 5.0) -> None:
        try:
            await self._raw.close(timeout=grace)
        except (OSError, TimeoutError, asyncpg.InterfaceError):
            # Closing a connection whose server is gone must not hide the error that got us here.
            self._raw.terminate()


async def connect(dsn: str, *, connect_timeout: float, command_timeout: float | None = None) -> Connection:
    """One connection outside any pool (migrations, LISTEN); close it with ``Connection.close``.

    ``command_timeout`` (default: ``connect_timeout``) bounds each statement.
    """
    with _translated():
        raw = await asyncpg.connect(
            dsn,
            timeout=connect_timeout,
            command_timeout=command_timeout if command_timeout is not None else connect_timeout,
        )
    try:
        await _init_connection(raw)
    except BaseException:
        raw.terminate()
        raise
    return Connection(raw)


class Database:
    """A pool of connections to one database."""

    def __init__(self, pool: Any, dsn: str) -> None:
        self._pool = pool
        self.dsn = dsn

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        connect_timeout: float,
        command_timeout: float,
        min_size: int = 1,
        max_size: int = 10,
    ) -> Database:
        with _translated():
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout,
                command_timeout=command_timeout,
                init=_init_connection,
            )
        log.debug("postgres.pool.opened", database=describe_dsn(dsn), max_size=max_size)
        return cls(pool, dsn)

    @contextlib.asynccontextmanager
    async def acquire(self, *, wait: float | None = None) -> AsyncIterator[Connection]:
        """A pooled connection; ``wait`` bounds the wait for a free one."""
        with _translated():
            async with self._pool.acquire(timeout=wait) as raw:
                yield Connection(raw)

    async def close(self, grace: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), grace)
        except TimeoutError:
            self._pool.terminate()
        log.debug("postgres.pool.closed", database=describe_dsn(self.dsn))
