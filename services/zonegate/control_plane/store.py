"""The control plane's entity store: every Kong entity in PostgreSQL, behind one async ``Store``.

The Admin API validates entities (``EntitySchema.validate``) and hands them over; the store fills
ids and timestamps, writes, and hands back entity dicts shaped exactly as the schema produces them,
so ``Config.build`` works on an export and declarative files round-trip. Database failures come
out as the domain errors of ``control_plane.errors``; asyncpg's never leak.

Invariants this module owns:

* Every write is one transaction that first bumps ``config_state.version`` (the row lock orders
  writers, so versions follow commit order with no gaps), then writes, then appends exactly one
  ``revisions`` row with that version and ``NOTIFY zonegate_config, '<version>'``. A write that
  changes nothing (deleting what is not there) rolls back and leaves no trace.
* ``export``/``snapshot`` read every table in one REPEATABLE READ transaction: the config they
  return is one committed state, and ``snapshot().version`` is the version of exactly that state.
* Pages are in ``id`` order with keyset offsets: rows that exist when the first page is read are
  neither skipped nor repeated however many rows are added or removed between pages.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self

import structlog

from zonegate.control_plane import migrations, postgres
from zonegate.control_plane.errors import (
    DatabaseError,
    ForeignKeyViolation,
    InvalidOffset,
    NotFound,
    PrimaryKeyViolation,
    ReferencedByOthers,
    SchemaNotReady,
    StoreError,
    StoreUnavailable,
    UniqueViolation,
)
from zonegate.control_plane.listener import CHANNEL, ConfigListener, VersionCallback
from zonegate.control_plane.tables import (
    FOREIGN_BY_CONSTRAINT,
    TABLES,
    UNIQUE_BY_CONSTRAINT,
    Table,
    UniqueConstraint,
    quote,
    references_to,
)
from zonegate.core.config import Config
from zonegate.core.entities import KINDS
from zonegate.core.fields import UUID_RE
from zonegate.core.schema import Entity

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL: Final = CHANNEL
DEFAULT_PAGE_SIZE: Final = 100

Op = Literal["create", "update", "delete", "replace_all"]

_BUMP_VERSION: Final = (
    "UPDATE config_state SET version = version + 1"
    " RETURNING version, floor(extract(epoch from now()))::bigint"
)
_RECORD_REVISION: Final = f"""
WITH revision AS (
  INSERT INTO revisions (version, kind, entity_id, op, entity, detail)
  VALUES ($1, $2, $3, $4, $5, $6)
  RETURNING version
)
SELECT pg_notify('{NOTIFY_CHANNEL}', version::text) FROM revision
"""
_UNDEFINED_TABLE: Final = "42P01"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole config as of one committed version."""

    version: int
    config: Config


@dataclass(frozen=True, slots=True)
class Revision:
    version: int
    created_at: int
    op: Op
    kind: str | None
    entity_id: str | None
    entity: Entity | None
    detail: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class TagRow:
    """One tag on one entity: a row of Kong's ``/tags`` listing."""

    tag: str
    entity_name: str
    entity_id: str


class _NothingChanged(Exception):
    """Raised inside a write to roll it back without a revision (e.g. deleting a missing entity)."""


# -- offsets ---------------------------------------------------------------------------------------------


def encode_offset(key: Sequence[str]) -> str:
    """Kong's offsets are opaque: base64 of the last key. URL-safe, so it needs no escaping."""
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_offset(token: str, length: int) -> list[str]:
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidOffset(token, "bad base64 encoding") from None
    try:
        key = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise InvalidOffset(token, "bad json encoding") from None
    if not isinstance(key, list) or len(key) != length or not all(isinstance(k, str) for k in key):
        raise InvalidOffset(token, "unexpected content")
    if not UUID_RE.match(key[-1]):
        raise InvalidOffset(token, "unexpected content")
    return key


# -- helpers ----------------------------------------------------------------------------------------------


def _table(kind: str) -> Table:
    try:
        return TABLES[kind]
    except KeyError:
        raise ValueError(f"unknown entity kind: {kind!r}") from None


def _is_uuid(value: object) -> bool:
    return isinstance(value, str) and UUID_RE.match(value) is not None


def _utc(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def _placeholders(start: int, count: int) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


@dataclass(frozen=True, slots=True)
class _Statements:
    """The SQL of one table, rendered once."""

    select: str
    insert: str
    upsert: str
    update: str
    # Positions in ``Table.record`` of the update's parameters: the id, then every settable column.
    update_params: tuple[int, ...]

    @classmethod
    def build(cls, table: Table) -> _Statements:
        columns = table.columns
        names = ", ".join(quote(c) for c in columns)
        values = _placeholders(1, len(columns))
        returning = table.select_list()
        # Updates rewrite every column but the id and created_at: an update keeps the entity's
        # creation time whatever the caller sent (Kong's PUT resets it; we do not).
        settable = [c for c in columns if c not in ("id", "created_at")]
        assignments = ", ".join(f"{quote(c)} = ${i}" for i, c in enumerate(settable, start=2))
        excluded = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in settable)
        # A row version that INSERT created has xmax 0; one that ON CONFLICT updated has not:
        # that is how the upsert learns whether it created or updated (for the revision's op).
        return cls(
            select=f"SELECT {returning} FROM {table.name}",
            insert=f"INSERT INTO {table.name} ({names}) VALUES ({values}) RETURNING {returning}",
            upsert=(
                f"INSERT INTO {table.name} AS t ({names}) VALUES ({values}) "
                f"ON CONFLICT (id) DO UPDATE SET {excluded} "
                f"RETURNING {table.select_list('t')}, (xmax = 0) AS inserted"
            ),
            update=f"UPDATE {table.name} SET {assignments} WHERE id = $1 RETURNING {returning}",
            update_params=(0, *(columns.index(c) for c in settable)),
        )


_STATEMENTS: Final = {kind: _Statements.build(table) for kind, table in TABLES.items()}
_DECODERS: Final = {kind: table.decoder() for kind, table in TABLES.items()}


class _Write:
    """One write transaction: its version, the database clock, and the revision to append."""

    __slots__ = ("conn", "now", "version")

    def __init__(self, conn: postgres.Connection, version: int, now: int) -> None:
        self.conn = conn
        self.version = version
        self.now = now

    async def record(
        self,
        op: Op,
        kind: str | None,
        entity_id: str | None,
        entity: Entity | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await self.conn.execute(_RECORD_REVISION, self.version, kind, entity_id, op, entity, detail)


# -- the store ---------------------------------------------------------------------------------------------


class Store:
    """Async access to every entity. Open with ``async with Store.connect(dsn, timeout=5) as store``."""

    def __init__(self, database: postgres.Database, *, timeout: float, bulk_timeout: float) -> None:
        self._db = database
        self._timeout = timeout
        self._bulk_timeout = bulk_timeout

    @property
    def database(self) -> postgres.Database:
        """The pool, for control-plane tables that are not entities (data-plane status)."""
        return self._db

    @property
    def timeout(self) -> float:
        """Seconds a single statement may take; other components reuse it for their own sessions."""
        return self._timeout

    @classmethod
    def connect(
        cls,
        dsn: str,
        *,
        timeout: float = 5.0,
        bulk_timeout: float = 120.0,
        min_size: int = 1,
        max_size: int = 10,
        check_schema: bool = True,
    ) -> _Connecting:
        """Open a pool to ``dsn``: ``await`` it, or use it as an async context manager.

        ``timeout`` bounds connecting and each statement; ``bulk_timeout`` bounds the statements of
        ``replace_all`` and ``export``, which move the whole config, and how long a write waits for
        the one ahead of it (a replace_all holds the version lock while it loads). With ``check_schema`` (the
        default) it refuses a database that needs bootstrapping or new migrations, with one line
        saying which command to run (``SchemaNotReady``).
        """
        return _Connecting(cls, dsn, timeout, bulk_timeout, min_size, max_size, check_schema)

    @classmethod
    async def _open(
        cls,
        dsn: str,
        connect_timeout: float,
        bulk_timeout: float,
        min_size: int,
        max_size: int,
        check_schema: bool,
    ) -> Store:
        try:
            database = await postgres.Database.open(
                dsn,
                connect_timeout=connect_timeout,
                command_timeout=connect_timeout,
                min_size=min_size,
                max_size=max_size,
            )
        except postgres.PostgresError as exc:
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {postgres.describe_dsn(dsn)}: {exc}"
            ) from exc
        store = cls(database, timeout=connect_timeout, bulk_timeout=bulk_timeout)
        if check_schema:
            try:
                with _translated():
                    async with database.acquire() as conn:
                        await migrations.check_schema(conn)
            except BaseException:
                await database.close()
                raise
        log.info("store.opened", database=postgres.describe_dsn(dsn))
        return store

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- health and schema ----------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless PostgreSQL answers (Kong's ``database.reachable``)."""
        with _translated():
            async with self._db.acquire(wait=self._timeout) as conn:
                await conn.fetchval("SELECT 1")

    async def pending_migrations(self) -> list[str]:
        """Migrations this code needs that the database has not run (empty when ready)."""
        with _translated():
            async with self._db.acquire() as conn:
                return await migrations.pending_migrations(conn)

    # -- reads ------------------------------------------------------------------------------------

    async def get(self, kind: str, entity_id: str) -> Entity | None:
        table = _table(kind)
        if not _is_uuid(entity_id):
            return None
        with _translated(kind):
            async with self._db.acquire() as conn:
                row = await conn.fetchrow(f"{_STATEMENTS[kind].select} WHERE id = $1", entity_id)
        return _DECODERS[table.kind](row) if row is not None else None

    async def get_by_key(
        self,
        kind: str,
        value: str,
        *,
        field: str | None = None,
        foreign: tuple[str, str] | None = None,
    ) -> Entity | None:
        """The entity whose ``field`` (default: the endpoint key, e.g. a service's name) is ``value``.

        ``field`` may be any unique field (``custom_id``, ``cert_digest``) or cache-key field;
        ``foreign=("upstream", id)`` scopes a key that is unique only under a parent, as a target's
        ``target`` is under its upstream.
        """
        table = _table(kind)
        name = field or table.schema.endpoint_key
        if name is None:
            raise ValueError(f"{kind} have no endpoint key; pass field=")
        conditions = [f"{table.column_for(name)} = $1"]
        args: list[Any] = [value]
        if foreign is not None:
            fk_field, fk_id = foreign
            if not _is_uuid(fk_id):
                return None
            conditions.append(f"{table.column_for(fk_field)} = $2")
            args.append(fk_id)
        sql = f"{_STATEMENTS[kind].select} WHERE {' AND '.join(conditions)} ORDER BY id LIMIT 1"
        with _translated(kind):
            async with self._db.acquire() as conn:
                row = await conn.fetchrow(sql, *args)
        return _DECODERS[kind](row) if row is not None else None

    async def page(
        self,
        kind: str,
        size: int = DEFAULT_PAGE_SIZE,
        offset: str | None = None,
        *,
        tags_all: Sequence[str] | None = None,
        tags_any: Sequence[str] | None = None,
        foreign: tuple[str, str] | None = None,
    ) -> tuple[list[Entity], str | None]:
        """One page in id order and the offset of the next one (None on the last page).

        ``tags_all`` is Kong's ``?tags=a,b`` (every tag), ``tags_any`` its ``?tags=a/b`` (any tag);
        ``foreign=("service", id)`` lists one parent's children (``/services/{id}/routes``).
        """
        table = _table(kind)
        if size < 1:
            raise ValueError("size must be at least 1")
        if tags_all is not None and tags_any is not None:
            raise ValueError("pass tags_all or tags_any, not both")
        conditions: list[str] = []
        args: list[Any] = []
        if foreign is not None:
            fk_field, fk_id = foreign
            column = quote(table.foreign_column(fk_field).column)
            if not _is_uuid(fk_id):
                return [], None
            args.append(fk_id)
            conditions.append(f"{column} = ${len(args)}")
        if tags_all is not None:
            args.append(list(tags_all))
            conditions.append(f"tags @> ${len(args)}::text[]")
        if tags_any is not None:
            args.append(list(tags_any))
            conditions.append(f"tags && ${len(args)}::text[]")
        if offset is not None:
            (after,) = decode_offset(offset, 1)
            args.append(after)
            conditions.append(f"id > ${len(args)}::uuid")
        args.append(size + 1)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"{_STATEMENTS[kind].select}{where} ORDER BY id LIMIT ${len(args)}"
        with _translated(kind):
            async with self._db.acquire() as conn:
                rows = await conn.fetch(sql, *args)
        decode = _DECODERS[kind]
        entities = [decode(row) for row in rows[:size]]
        next_offset = encode_offset([entities[-1]["id"]]) if len(rows) > size else None
        return entities, next_offset

    async def tags(
        self, size: int = DEFAULT_PAGE_SIZE, offset: str | None = None, *, tag: str | None = None
    ) -> tuple[list[TagRow], str | None]:
        """Kong's ``/tags`` (every tag on every entity) or ``/tags/{tag}``, paginated."""
        if size < 1:
            raise ValueError("size must be at least 1")
        args: list[Any] = []
        branch_filter = ""
        if tag is not None:
            args.append(tag)
            # The GIN index finds the entities; the outer filter drops their other tags.
            branch_filter = " WHERE tags @> ARRAY[$1::text]"
        branches = " UNION ALL ".join(
            f"SELECT unnest(tags) AS tag, '{kind}'::text AS entity_name, id AS entity_id "
            f"FROM {quote(kind)}{branch_filter}"
            for kind in KINDS
            if TABLES[kind].has_tags
        )
        conditions: list[str] = []
        if tag is not None:
            conditions.append("tag = $1")
        if offset is not None:
            last_tag, last_kind, last_id = decode_offset(offset, 3)
            args += [last_tag, last_kind, last_id]
            n = len(args)
            conditions.append(f"(tag, entity_name, entity_id) > (${n - 2}, ${n - 1}, ${n}::uuid)")
        args.append(size + 1)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = (
            f"SELECT tag, entity_name, entity_id::text FROM ({branches}) AS t{where} "
            f"ORDER BY tag, entity_name, entity_id LIMIT ${len(args)}"
        )
        with _translated():
            async with self._db.acquire() as conn:
                rows = await conn.fetch(sql, *args)
        found = [TagRow(row[0], row[1], row[2]) for row in rows[:size]]
        next_offset = None
        if len(rows) > size:
            last = found[-1]
            next_offset = encode_offset([last.tag, last.entity_name, last.entity_id])
        return found, next_offset

    async def config_version(self) -> int:
        """The version of the latest committed write (0 for a freshly bootstrapped database)."""
        with _translated():
            async with self._db.acquire() as conn:
                version = await conn.fetchval("SELECT version FROM config_state")
        if version is None:
            raise SchemaNotReady(
                "the config_state row is missing; run 'zonegate migrations reset' and bootstrap"
            )
        return int(version)

    async def revisions(self, after: int = 0, limit: int = 100) -> list[Revision]:
        """Revisions with a version above ``after``, oldest first."""
        sql = (
            "SELECT version, floor(extract(epoch from created_at))::bigint, op, kind, entity_id::text, "
            "entity, detail FROM revisions WHERE version > $1 ORDER BY version LIMIT $2"
        )
        with _translated():
            async with self._db.acquire() as conn:
                rows = await conn.fetch(sql, after, limit)
        return [Revision(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]

    async def snapshot(self) -> Snapshot:
        """Every entity and the version they are at, read in one snapshot-isolated transaction."""
        started = time.monotonic()
        entities: dict[str, list[Entity]] = {}
        with _translated():
            async with (
                self._db.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                version = int(await conn.fetchval("SELECT version FROM config_state"))
                for kind in KINDS:
                    rows = await conn.fetch(
                        f"{_STATEMENTS[kind].select} ORDER BY id", query_timeout=self._bulk_timeout
                    )
                    decode = _DECODERS[kind]
                    entities[kind] = [decode(row) for row in rows]
        config = Config.build(entities)
        log.info(
            "store.exported",
            version=version,
            entities=sum(len(v) for v in entities.values()),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return Snapshot(version, config)

    async def export(self) -> Config:
        """The whole config (Kong's ``db_export``); see ``snapshot`` for its version too."""
        return (await self.snapshot()).config

    # -- writes -------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[_Write]:
        async with self._db.acquire() as conn, conn.transaction():
            # Waits for the writer ahead, which may be a replace_all holding the row for seconds.
            row = await conn.fetchrow(_BUMP_VERSION, query_timeout=self._bulk_timeout)
            if row is None:
                raise SchemaNotReady(
                    "the config_state row is missing; run 'zonegate migrations reset' and bootstrap"
                )
            yield _Write(conn, int(row[0]), int(row[1]))

    async def insert(self, kind: str, entity: Mapping[str, Any]) -> Entity:
        """Create ``entity`` (an id is generated when it has none). Returns it as stored."""
        table = _table(kind)
        prepared = _with_id(entity)
        with _translated(kind, prepared):
            async with self._write() as write:
                stored = await self._insert(write, table, prepared)
                await write.record("create", kind, stored["id"], stored)
        log.debug("store.created", kind=kind, id=stored["id"], version=write.version)
        return stored

    async def upsert(self, kind: str, entity: Mapping[str, Any], *, by: str = "id") -> Entity:
        """PUT: replace the entity matching ``entity[by]`` entirely, or create it.

        ``by`` is ``"id"`` or the endpoint key (``PUT /services/{name}``). A match keeps its id and
        ``created_at``; fields the new entity does not set are reset, as Kong's PUT does.
        """
        table = _table(kind)
        prepared = dict(entity)
        with _translated(kind, prepared):
            async with self._write() as write:
                if by != "id":
                    existing_id = await self._find_id(write.conn, table, by, prepared)
                    prepared["id"] = existing_id or prepared.get("id") or str(uuid.uuid4())
                elif not _is_uuid(prepared.get("id")):
                    raise ValueError("upsert by id needs the entity's id")
                prepared["id"] = str(prepared["id"]).lower()
                stamp = _utc(write.now)
                created = (
                    _utc(prepared["created_at"]) if isinstance(prepared.get("created_at"), int) else stamp
                )
                row = await write.conn.fetchrow(
                    _STATEMENTS[kind].upsert, *table.record(prepared, created, stamp)
                )
                assert row is not None
                stored = _DECODERS[kind](row)
                op: Op = "create" if row[len(table.columns)] else "update"
                await write.record(op, kind, stored["id"], stored)
        return stored

    async def update(self, kind: str, entity_id: str, entity: Mapping[str, Any]) -> Entity:
        """Replace the entity ``entity_id`` with ``entity`` (already merged and validated).

        Raises ``NotFound``. To merge a PATCH body race-free, use ``patch``.
        """
        table = _table(kind)
        prepared = {**entity, "id": entity_id}
        if not _is_uuid(entity_id):
            raise NotFound(kind, {"id": entity_id})
        with _translated(kind, prepared):
            async with self._write() as write:
                stored = await self._update(write, table, prepared)
                await write.record("update", kind, entity_id, stored)
        return stored

    async def patch(self, kind: str, entity_id: str, change: Callable[[Entity], Mapping[str, Any]]) -> Entity:
        """Read the entity, let ``change`` return its new (validated) form, and write it, atomically.

        ``change`` runs inside the write transaction, after the entity is read, so no other
        write can slip in between: the Admin API merges a PATCH body and validates in it. An
        exception from ``change`` (a ``SchemaViolation``) rolls everything back and propagates.
        """
        table = _table(kind)
        if not _is_uuid(entity_id):
            raise NotFound(kind, {"id": entity_id})
        prepared: dict[str, Any] = {"id": entity_id}
        with _translated(kind, prepared):
            async with self._write() as write:
                row = await write.conn.fetchrow(
                    f"{_STATEMENTS[kind].select} WHERE id = $1 FOR UPDATE", entity_id
                )
                if row is None:
                    raise NotFound(kind, {"id": entity_id})
                prepared.update(change(_DECODERS[kind](row)))
                prepared["id"] = entity_id
                stored = await self._update(write, table, prepared)
                await write.record("update", kind, entity_id, stored)
        return stored

    async def delete(self, kind: str, entity_id: str) -> Entity | None:
        """Delete the entity and whatever cascades with it; return it, or None if it did not exist.

        Raises ``ForeignKeyViolation`` when a restricting child still points at it (a route at
        its service), ``ReferencedByOthers`` for a CA certificate a service still lists.
        """
        table = _table(kind)
        if not _is_uuid(entity_id):
            return None
        try:
            with _translated(kind):
                async with self._write() as write:
                    row = await write.conn.fetchrow(f"{_STATEMENTS[kind].select} WHERE id = $1", entity_id)
                    if row is None:
                        raise _NothingChanged
                    existing = _DECODERS[kind](row)
                    if kind == "ca_certificates":
                        await _check_ca_certificate_unused(write.conn, entity_id)
                    cascaded = await _cascade_targets(write.conn, kind, [entity_id])
                    await write.conn.execute(f"DELETE FROM {table.name} WHERE id = $1", entity_id)
                    detail = {"cascaded": cascaded} if cascaded else None
                    await write.record("delete", kind, entity_id, existing, detail)
        except _NothingChanged:
            return None
        return existing

    async def replace_all(self, config: Config) -> int:
        """Make ``config`` the whole content of the database, in one transaction; return its version.

        Backs ``POST /config`` and ``config db-import``. Entities keep the timestamps they carry
        (an export replayed is the same config); the others get the database's current time.
        """
        started = time.monotonic()
        _check_config(config)
        counts = {kind: len(config.of(kind)) for kind in KINDS if config.of(kind)}
        with _translated():
            async with self._write() as write:
                for kind in reversed(KINDS):
                    await write.conn.execute(f"DELETE FROM {quote(kind)}", query_timeout=self._bulk_timeout)
                stamps = _Stamps(write.now)
                for kind in KINDS:
                    entities = config.of(kind)
                    if not entities:
                        continue
                    table = TABLES[kind]
                    await write.conn.copy_records(
                        kind,
                        table.columns,
                        _records(table, entities, stamps),
                        query_timeout=self._bulk_timeout,
                    )
                await write.record("replace_all", None, None, None, {"counts": counts})
        log.info(
            "store.replaced_all",
            version=write.version,
            entities=sum(counts.values()),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return write.version

    def listen(self, callback: VersionCallback, *, poll_interval: float = 5.0) -> ConfigListener:
        """Call ``callback(version)`` after each committed write (LISTEN zonegate_config).

        Use as ``async with store.listen(cb):``. It runs on its own connection, reconnects with
        backoff when PostgreSQL goes away, and polls the version every ``poll_interval`` seconds,
        so a lost notification or a silently dead connection delays an update, never loses it.
        Versions reach the callback in increasing order; intermediate ones may be skipped.
        """
        return ConfigListener(self._db.dsn, callback, timeout=self._timeout, poll_interval=poll_interval)

    # -- write internals ----------------------------------------------------------------------------

    async def _insert(self, write: _Write, table: Table, entity: Entity) -> Entity:
        stamp = _utc(write.now)
        created = _utc(entity["created_at"]) if isinstance(entity.get("created_at"), int) else stamp
        row = await write.conn.fetchrow(_STATEMENTS[table.kind].insert, *table.record(entity, created, stamp))
        assert row is not None
        return _DECODERS[table.kind](row)

    async def _update(self, write: _Write, table: Table, entity: Entity) -> Entity:
        statements = _STATEMENTS[table.kind]
        stamp = _utc(write.now)
        record = table.record(entity, stamp, stamp)
        row = await write.conn.fetchrow(statements.update, *(record[i] for i in statements.update_params))
        if row is None:
            raise NotFound(table.kind, {"id": entity["id"]})
        return _DECODERS[table.kind](row)

    async def _find_id(self, conn: postgres.Connection, table: Table, by: str, entity: Entity) -> str | None:
        """The id of the row whose ``by`` field (and, for a cache-key field, the rest of the key) matches."""
        value = entity.get(by)
        if value is None:
            raise ValueError(f"upsert by {by} needs entity[{by!r}]")
        if table.schema.field(by).unique:
            fields: tuple[str, ...] = (by,)
        elif by in table.schema.cache_key:
            fields = table.schema.cache_key
        else:
            raise ValueError(f"{table.kind}.{by} is not a unique field or part of the cache key")
        conditions = []
        args: list[Any] = []
        for name in fields:
            raw = entity.get(name)
            if isinstance(raw, Mapping):
                raw = raw.get("id")
            args.append(raw)
            conditions.append(f"{table.column_for(name)} IS NOT DISTINCT FROM ${len(args)}")
        sql = f"SELECT id::text FROM {table.name} WHERE {' AND '.join(conditions)} FOR UPDATE"
        found = await conn.fetchval(sql, *args)
        return str(found) if found is not None else None


class _Connecting:
    """What ``Store.connect`` returns: awaitable, and an async context manager that closes the store."""

    def __init__(
        self,
        cls: type[Store],
        dsn: str,
        timeout: float,
        bulk_timeout: float,
        min_size: int,
        max_size: int,
        check_schema: bool,
    ) -> None:
        self._cls = cls
        self._args = (dsn, timeout, bulk_timeout, min_size, max_size, check_schema)
        self._store: Store | None = None

    def _open(self) -> Coroutine[Any, Any, Store]:
        return self._cls._open(*self._args)

    def __await__(self) -> Generator[Any, None, Store]:
        return self._open().__await__()

    async def __aenter__(self) -> Store:
        self._store = await self._open()
        return self._store

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._store is not None:
            await self._store.close()


# -- module internals --------------------------------------------------------------------------------


def _with_id(entity: Mapping[str, Any]) -> Entity:
    prepared = dict(entity)
    if prepared.get("id") is None:
        prepared["id"] = str(uuid.uuid4())
    else:
        prepared["id"] = str(prepared["id"]).lower()
    return prepared


# Where a CA certificate id can be listed: a service's ca_certificates, a plugin's config.ca_certificates.
_CA_CERTIFICATE_USERS: Final = (
    ("services", "entity -> 'ca_certificates'"),
    ("plugins", "entity -> 'config' -> 'ca_certificates'"),
)


async def _check_ca_certificate_unused(conn: postgres.Connection, entity_id: str) -> None:
    """Kong refuses to delete a CA certificate that a service lists (its ca_certificates DAO)."""
    for kind, path in _CA_CERTIFICATE_USERS:
        user = await conn.fetchval(
            f"SELECT id::text FROM {quote(kind)} WHERE {path} ? $1 ORDER BY id LIMIT 1", entity_id
        )
        if user is not None:
            raise ReferencedByOthers("ca_certificates", entity_id, kind, str(user))


async def _cascade_targets(conn: postgres.Connection, kind: str, ids: list[str]) -> dict[str, list[str]]:
    """What PostgreSQL's ON DELETE CASCADE will remove with ``ids``, for the revision row."""
    found: dict[str, list[str]] = {}
    for reference in references_to(kind):
        if reference.on_delete != "cascade":
            continue
        child = TABLES[reference.child]
        column = quote(child.foreign_column(reference.field).column)
        rows = await conn.fetch(
            f"SELECT id::text FROM {child.name} WHERE {column} = ANY($1::uuid[]) ORDER BY id", ids
        )
        child_ids = [row[0] for row in rows]
        if not child_ids:
            continue
        found.setdefault(reference.child, []).extend(child_ids)
        for grandchild, more in (await _cascade_targets(conn, reference.child, child_ids)).items():
            found.setdefault(grandchild, []).extend(more)
    for kind_ids in found.values():
        kind_ids.sort()
    return found


class _Stamps:
    """Datetimes for epoch seconds: most entities of a bulk load share one, so build each once."""

    def __init__(self, now: int) -> None:
        self.now = _utc(now)
        self._cache: dict[int, dt.datetime] = {}

    def at(self, seconds: Any) -> dt.datetime:
        if not isinstance(seconds, int):
            return self.now
        stamp = self._cache.get(seconds)
        if stamp is None:
            stamp = self._cache[seconds] = _utc(seconds)
        return stamp


def _records(table: Table, entities: Sequence[Entity], stamps: _Stamps) -> Iterator[tuple[Any, ...]]:
    record = table.record
    for entity in entities:
        yield record(entity, stamps.at(entity.get("created_at")), stamps.at(entity.get("updated_at")))


def _check_config(config: Config) -> None:
    """Reject what the database would reject, with the entity at hand to fill Kong's error body.

    COPY stops at the first violation and reports it without the entity, so catching these
    up front is what lets ``replace_all`` name the offending fields.
    """
    ids: dict[str, set[str]] = {}
    for kind in KINDS:
        seen: set[str] = set()
        for entity in config.of(kind):
            entity_id = entity.get("id")
            if not isinstance(entity_id, str) or not _is_uuid(entity_id):
                raise ValueError(f"{kind}: every entity of a Config needs an id")
            if entity_id in seen:
                raise PrimaryKeyViolation(kind, entity_id)
            seen.add(entity_id)
        ids[kind] = seen
    for kind in KINDS:
        table = TABLES[kind]
        taken: dict[str, set[Any]] = {c.name: set() for c in table.unique}
        for entity in config.of(kind):
            for fk in table.foreign:
                ref = entity.get(fk.field)
                if ref is not None and ref.get("id") not in ids[fk.reference]:
                    raise ForeignKeyViolation.invalid_reference(kind, fk.field, fk.reference, ref)
            for constraint in table.unique:
                key = _unique_key(constraint, entity)
                if key is None:
                    continue
                if key in taken[constraint.name]:
                    raise UniqueViolation(kind, {f: entity.get(f) for f in constraint.fields})
                taken[constraint.name].add(key)


def _unique_key(constraint: UniqueConstraint, entity: Entity) -> tuple[Any, ...] | None:
    """The value a unique constraint compares, or None when it does not apply (a NULL unique field)."""
    values = []
    for name in constraint.fields:
        value = entity.get(name)
        if isinstance(value, Mapping):
            value = value.get("id")
        values.append(value)
    if len(values) == 1 and values[0] is None:
        return None  # NULLs never collide in a UNIQUE column; cache keys treat them as equal
    return tuple(values)


# -- error translation -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _translated(kind: str | None = None, entity: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Turn ``postgres`` errors into the store's domain errors, using the entity being written."""
    try:
        yield
    except postgres.IntegrityError as exc:
        raise _integrity_error(exc, kind, entity) from exc
    except postgres.Unavailable as exc:
        raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}") from exc
    except postgres.QueryError as exc:
        if exc.sqlstate == _UNDEFINED_TABLE:
            raise SchemaNotReady("database needs bootstrapping; run 'zonegate migrations bootstrap'") from exc
        raise DatabaseError(str(exc)) from exc


def _integrity_error(
    exc: postgres.IntegrityError, kind: str | None, entity: Mapping[str, Any] | None
) -> StoreError:
    constraint = exc.constraint or ""
    values = dict(entity or {})
    if exc.kind == "unique":
        if kind is not None and constraint == f"{kind}_pkey":
            return PrimaryKeyViolation(kind, str(values.get("id")))
        unique = UNIQUE_BY_CONSTRAINT.get(constraint)
        if unique is not None:
            table, spec = unique
            return UniqueViolation(table.kind, {name: values.get(name) for name in spec.fields})
    if exc.kind == "foreign_key":
        found = FOREIGN_BY_CONSTRAINT.get(constraint)
        if found is not None:
            table, fk = found
            if table.kind == kind:
                ref = values.get(fk.field)
                key = dict(ref) if isinstance(ref, Mapping) else {"id": ref}
                return ForeignKeyViolation.invalid_reference(table.kind, fk.field, fk.reference, key)
            if kind is not None:
                return ForeignKeyViolation.restricted(kind, table.kind)
    log.warning("store.integrity_error.unmapped", constraint=constraint, detail=exc.detail)
    return DatabaseError(str(exc))
