"""The DB-less node's store (``ConfigStore``) reads exactly like the PostgreSQL store.

The same declarative config goes into both; every page (sizes, offsets, tag filters, one parent's
children), every ``/tags`` page and every lookup must come back the same, timestamps aside (the
database stamps rows when it writes them, the DB-less store when it loads the config). Tags are
plain ASCII lower case, which every collation orders the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest

from zonegate.control_plane.admin_api.store_port import EntityReader
from zonegate.control_plane.config_store import ConfigStore
from zonegate.control_plane.errors import InvalidOffset, NotFound, OperationUnsupported
from zonegate.control_plane.store import Store
from zonegate.core import declarative
from zonegate.core.config import Config
from zonegate.core.entities import BY_NAME, KINDS
from zonegate.core.schema import TIMESTAMP_FIELDS, Entity

TAGS = ("alpha", "beta", "gamma")
MAX_PAGES = 500  # more than any listing here has at size 1


def document() -> dict[str, Any]:
    tag_sets = [list(c) for n in range(len(TAGS) + 1) for c in itertools.combinations(TAGS, n)]
    services = [
        {
            "name": f"svc{i}",
            "host": f"h{i}.internal",
            "tags": tag_sets[i % len(tag_sets)],
            "routes": [
                {"name": f"r{i}-{j}", "paths": [f"/p{i}/{j}"], "tags": ["alpha"]} for j in range(i % 4)
            ],
        }
        for i in range(23)
    ]
    consumers = [
        {
            "username": f"user{i}",
            "custom_id": f"cid{i}",
            "tags": tag_sets[(i + 3) % len(tag_sets)],
            "keyauth_credentials": [{"key": f"key{i}-{j}"} for j in range(i % 3)],
            "acls": [{"group": "admins"}] if i % 2 else [],
        }
        for i in range(9)
    ]
    upstreams = [
        {"name": f"up{i}", "targets": [{"target": f"10.0.{i}.{j}:80"} for j in range(5)]} for i in range(3)
    ]
    return {"_format_version": "3.0", "services": services, "consumers": consumers, "upstreams": upstreams}


class Active:
    """What a DB-less node exposes to its store: the active config and a way to apply another."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.applied: list[Config] = []

    async def apply_config(self, config: Config) -> None:
        self.applied.append(config)
        self.config = config


def bare(entity: Entity | None) -> Entity | None:
    return None if entity is None else {k: v for k, v in entity.items() if k not in TIMESTAMP_FIELDS}


async def all_pages(reader: EntityReader, kind: str, size: int, **filters: Any) -> list[Any]:
    """Every page as (entities without timestamps, next offset)."""
    pages: list[Any] = []
    offset: str | None = None
    while True:
        found, offset = await reader.page(kind, size, offset, **filters)
        pages.append(([bare(e) for e in found], offset))
        if offset is None:
            return pages
        assert len(pages) <= MAX_PAGES, "the offsets do not move forward"


async def all_tag_pages(reader: EntityReader, size: int, tag: str | None = None) -> list[Any]:
    pages: list[Any] = []
    offset: str | None = None
    while True:
        rows, offset = await reader.tags(size, offset, tag=tag)
        pages.append((rows, offset))
        if offset is None:
            return pages
        assert len(pages) <= MAX_PAGES, "the offsets do not move forward"


@pytest.fixture
async def both(store: Store) -> tuple[Store, ConfigStore, Config]:
    config = declarative.load(document())
    await store.replace_all(config)
    return store, ConfigStore(Active(config)), config


async def test_pages_and_tag_filters_match(both: tuple[Store, ConfigStore, Config]) -> None:
    store, memory, _ = both
    checked = 0
    for kind in KINDS:
        filters: list[dict[str, Sequence[str]]] = [{}]
        if BY_NAME[kind].has_field("tags"):
            filters += [
                {"tags_all": ["alpha"]},
                {"tags_all": ["alpha", "beta"]},
                {"tags_any": ["beta", "gamma"]},
            ]
        for size, extra in itertools.product((1, 3, 100), filters):
            expected = await all_pages(store, kind, size, **extra)
            assert await all_pages(memory, kind, size, **extra) == expected, (kind, size, extra)
            checked += sum(len(page) for page, _ in expected)
    assert checked > 500  # the comparison saw real pages, not just empty ones


async def test_children_pages_match(both: tuple[Store, ConfigStore, Config]) -> None:
    store, memory, config = both
    for kind, fk, parent in [
        ("routes", "service", "services"),
        ("targets", "upstream", "upstreams"),
        ("keyauth_credentials", "consumer", "consumers"),
        ("acls", "consumer", "consumers"),
    ]:
        for parent_entity in config.of(parent):
            for size in (1, 2, 100):
                foreign = (fk, parent_entity["id"])
                expected = await all_pages(store, kind, size, foreign=foreign)
                assert await all_pages(memory, kind, size, foreign=foreign) == expected
    assert await memory.page("routes", foreign=("service", "not-a-uuid")) == ([], None)


async def test_tag_rows_match(both: tuple[Store, ConfigStore, Config]) -> None:
    store, memory, _ = both
    for size in (1, 4, 1000):
        assert await all_tag_pages(memory, size) == await all_tag_pages(store, size)
        for tag in (*TAGS, "absent"):
            assert await all_tag_pages(memory, size, tag) == await all_tag_pages(store, size, tag)


async def test_lookups_match(both: tuple[Store, ConfigStore, Config]) -> None:
    store, memory, config = both
    for kind, entity in config:
        assert bare(await memory.get(kind, entity["id"])) == bare(await store.get(kind, entity["id"]))
    upstream = config.of("upstreams")[1]
    consumer = config.of("consumers")[1]
    lookups: list[tuple[str, str, dict[str, Any]]] = [
        ("services", "svc7", {}),
        ("services", "nope", {}),
        ("consumers", "user3", {}),
        ("consumers", "cid4", {"field": "custom_id"}),
        ("keyauth_credentials", "key5-1", {}),
        ("targets", "10.0.1.3:80", {"field": "target", "foreign": ("upstream", upstream["id"])}),
        ("targets", "10.0.2.3:80", {"field": "target", "foreign": ("upstream", upstream["id"])}),
        ("acls", "admins", {"field": "group", "foreign": ("consumer", consumer["id"])}),
        ("acls", "admins", {"field": "group"}),
    ]
    for kind, value, options in lookups:
        expected = bare(await store.get_by_key(kind, value, **options))
        assert bare(await memory.get_by_key(kind, value, **options)) == expected, (kind, value)
    assert await memory.get("services", "not-a-uuid") is None
    assert await memory.config_version() == 1
    assert bare((await memory.snapshot()).config.of("services")[0]) == config.of("services")[0]


async def test_bad_offsets_are_refused_alike(both: tuple[Store, ConfigStore, Config]) -> None:
    store, memory, _ = both
    for reader in (store, memory):
        for token in ("x", "bm90IGpzb24", "WyJub3QtYS11dWlkIl0"):
            with pytest.raises(InvalidOffset) as raised:
                await reader.page("services", 10, token)
            assert raised.value.code == 7


# -- the DB-less store alone --------------------------------------------------------------------------


async def test_writes_are_refused_with_kongs_operations() -> None:
    config = declarative.load(document())
    memory = ConfigStore(Active(config))
    service = config.of("services")[0]

    with pytest.raises(OperationUnsupported, match="cannot create 'services' entities when not"):
        await memory.insert("services", {"host": "x"})
    with pytest.raises(OperationUnsupported, match="cannot create or update 'routes' entities when"):
        await memory.upsert("routes", {"paths": ["/"]}, by="name")
    with pytest.raises(OperationUnsupported, match="cannot remove 'services' entities when"):
        await memory.delete("services", service["id"])
    assert await memory.delete("services", "6a3c4e2b-1f0d-4c8e-9b7a-0000000000ff") is None
    with pytest.raises(NotFound):
        await memory.patch("services", "6a3c4e2b-1f0d-4c8e-9b7a-0000000000ff", dict)

    seen: list[Entity] = []
    with pytest.raises(OperationUnsupported, match="cannot update 'services' entities when"):
        await memory.patch("services", service["id"], lambda current: seen.append(current) or current)
    assert [bare(e) for e in seen] == [service]  # the change ran (it validates) before the refusal
    assert OperationUnsupported("services", "remove").by_field("name").body() == {
        "code": 12,
        "name": "operation unsupported",
        "message": "cannot remove 'services' entities by 'name' when not using a database",
    }


async def test_replace_all_applies_and_moves_the_version() -> None:
    active = Active(declarative.load(document()))
    now = [1000.0]
    memory = ConfigStore(active, clock=lambda: now[0])
    first = await memory.get("services", active.config.of("services")[0]["id"])
    assert first is not None and (first["created_at"], first["updated_at"]) == (1000, 1000)
    assert await memory.config_version() == 1

    now[0] = 2000.0
    replacement = declarative.load({"_format_version": "3.0", "services": [{"name": "only", "host": "o"}]})
    assert await memory.replace_all(replacement) == 2

    assert active.applied == [replacement]
    found, _ = await memory.page("services")
    assert [(s["name"], s["created_at"]) for s in found] == [("only", 2000)]
    assert await memory.export() is replacement
    assert await memory.config_version() == 2  # unchanged until the config changes again
