"""The local stack's database: migrated like ``zonegate migrations bootstrap``/``up``, then seeded.

The sample config goes in only when the database holds no entity: a restart keeps whatever the
user changed through the Admin API since, as Kong keeps its database across ``kong restart``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from zonegate.control_plane import migrations, postgres
from zonegate.control_plane.store import Store
from zonegate.core import declarative
from zonegate.local_stack.ports import StackError

SAMPLE_CONFIG: Final = Path(__file__).parent.parent / "sample" / "kong.yml"
# The sample service's URL as written in the file; the stack points it at its demo upstream.
SAMPLE_UPSTREAM: Final = "http://127.0.0.1:9000"
DATABASE_NAME: Final = "zonegate"


@dataclass(frozen=True, slots=True)
class Prepared:
    migrated: tuple[str, ...]  # migrations run now (empty: the schema was already up to date)
    seeded: bool  # the sample config was loaded (the database was empty)
    version: int  # the config version after this


def sample_text(upstream_url: str) -> str:
    text = SAMPLE_CONFIG.read_text(encoding="utf-8")
    if SAMPLE_UPSTREAM not in text:  # a sample edited without this module: fail loudly, not oddly
        raise StackError(f"{SAMPLE_CONFIG} no longer names {SAMPLE_UPSTREAM}")
    return text.replace(SAMPLE_UPSTREAM, upstream_url)


async def prepare(dsn: str, upstream_url: str) -> Prepared:
    """Bring the schema up to date and load the sample config into an empty database."""
    where = postgres.describe_dsn(dsn)
    try:
        migrated = await _migrate(dsn)
        async with Store.connect(dsn, timeout=30, max_size=2) as store:
            snapshot = await store.snapshot()
            if sum(snapshot.config.counts().values()):
                return Prepared(migrated, seeded=False, version=snapshot.version)
            version = await store.replace_all(declarative.loads(sample_text(upstream_url)))
            return Prepared(migrated, seeded=True, version=version)
    except migrations.MigrationError as exc:
        raise StackError(f"PostgreSQL at {where}: {exc}") from None
    except postgres.Unavailable as exc:
        raise StackError(f"cannot connect to PostgreSQL at {where}: {exc}") from None
    except postgres.PostgresError as exc:
        raise StackError(f"PostgreSQL at {where}: {exc}") from None


async def _migrate(dsn: str) -> tuple[str, ...]:
    conn = await postgres.connect(dsn, connect_timeout=30)
    try:
        state = await migrations.schema_state(conn)
        if state.needs_bootstrap:
            return tuple(await migrations.bootstrap(conn, lock_timeout=60))
        if state.new:
            return (await migrations.up(conn, lock_timeout=60)).executed
        return ()
    finally:
        await conn.close()
