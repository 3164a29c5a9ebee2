"""``zonegate config db-import`` and ``db-export``: whole configs between files and PostgreSQL.

Kong's ``kong config db_import`` inserts entity by entity and can stop half-way; here the file
is validated completely first (nothing is written if any entity is wrong) and then replaces the
database's content in one transaction, as ``POST /config`` does. An export is the flat
declarative YAML of one committed state (the store's snapshot), without timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass

from zonegate.control_plane.exported import export_hash
from zonegate.control_plane.storable import find_unstorable
from zonegate.control_plane.store import Store
from zonegate.core import declarative
from zonegate.core.config import Config
from zonegate.settings import Settings


@dataclass(frozen=True, slots=True)
class Exported:
    text: str
    version: int
    entities: int
    config_hash: str


def unstorable_in(config: Config) -> str | None:
    """The first value of ``config`` PostgreSQL could not store, located by kind and entity id."""
    for kind, entity in config:
        found = find_unstorable(entity)
        if found is not None:
            path, problem = found
            return f"{kind} {entity.get('id')}: {declarative.render_path(path)}: {problem}"
    return None


async def import_config(settings: Settings, config: Config) -> int:
    """Replace the database's content with ``config``; the new config version."""
    async with Store.connect(
        settings.postgres_dsn(), timeout=settings.pg_timeout / 1000, max_size=2
    ) as store:
        return await store.replace_all(config)  # loaded by declarative: passwords already hashed


async def export_config(settings: Settings) -> Exported:
    async with Store.connect(
        settings.postgres_dsn(), timeout=settings.pg_timeout / 1000, max_size=2
    ) as store:
        snapshot = await store.snapshot()
    config = snapshot.config
    return Exported(
        text=declarative.dumps(config),
        version=snapshot.version,
        entities=sum(config.counts().values()),
        config_hash=export_hash(config),
    )
