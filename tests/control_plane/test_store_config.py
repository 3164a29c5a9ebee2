"""The whole config: export, replace_all, revisions, NOTIFY, and two writers at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from core import pki
from zonegate.control_plane.errors import ForeignKeyViolation, PrimaryKeyViolation, UniqueViolation
from zonegate.control_plane.postgres import connect
from zonegate.control_plane.store import Store
from zonegate.core import canonical, declarative
from zonegate.core.config import Config
from zonegate.core.schema import TIMESTAMP_FIELDS

from .conftest import entity, ref

DATA = Path(__file__).parent.parent / "data"


def full_document() -> dict[str, Any]:
    """Kong's documentation example plus TLS entities, so every kind is present."""
    document: dict[str, Any] = yaml.safe_load((DATA / "kong-docs-full.yaml").read_text())
    leaf = pki.ec_leaf("api.example.test")
    document["certificates"] = [
        {"cert": leaf.cert, "key": leaf.key, "tags": ["tls"], "snis": [{"name": "api.example.test"}]}
    ]
    document["ca_certificates"] = [{"cert": pki.ca_cert("Partner CA").cert}]
    return document


def without_timestamps(config: Config) -> Config:
    return Config.build(
        {
            kind: [{k: v for k, v in e.items() if k not in TIMESTAMP_FIELDS} for e in config.of(kind)]
            for kind in config.entities
        }
    )


async def test_export_replace_all_export_is_the_same_config(store: Store) -> None:
    loaded = declarative.load(full_document())
    assert all(loaded.of(kind) for kind in ("certificates", "snis", "ca_certificates", "acls", "targets"))

    await store.replace_all(loaded)
    first = await store.export()
    await store.replace_all(first)
    second = await store.export()

    assert canonical.config_hash(second) == canonical.config_hash(first)
    assert second == first
    # What went in comes out, plus the timestamps the store set.
    assert without_timestamps(first) == loaded
    assert not first.dangling_references()


async def test_an_export_round_trips_through_a_declarative_file(store: Store) -> None:
    await store.replace_all(declarative.load(full_document()))
    exported = await store.export()

    text = declarative.dumps(exported)
    reloaded = declarative.load(declarative.to_document(exported))

    assert declarative.loads(text) == reloaded
    assert reloaded == without_timestamps(exported)


async def test_single_writes_show_up_in_the_export(store: Store) -> None:
    service = await store.insert("services", entity("services", name="s", host="a.internal"))
    route = await store.insert("routes", entity("routes", paths=["/"], service=ref(service)))

    snapshot = await store.snapshot()

    assert snapshot.version == 2
    assert snapshot.config == Config.build({"services": [service], "routes": [route]})


async def test_replace_all_replaces_everything_in_one_revision(store: Store) -> None:
    doomed = await store.insert("consumers", entity("consumers", username="doomed"))
    config = declarative.loads(
        '{"_format_version": "3.0", "services": [{"name": "s", "url": "http://a.internal",'
        ' "routes": [{"name": "r", "paths": ["/"]}]}]}'
    )

    version = await store.replace_all(config)

    assert version == 2 == await store.config_version()
    assert await store.get("consumers", doomed["id"]) is None
    assert without_timestamps(await store.export()) == config
    revision = (await store.revisions(after=1))[0]
    assert (revision.op, revision.kind, revision.entity_id, revision.entity) == (
        "replace_all",
        None,
        None,
        None,
    )
    assert revision.detail == {"counts": {"services": 1, "routes": 1}}


async def test_replace_all_with_nothing_empties_the_database(store: Store) -> None:
    await store.replace_all(declarative.load(full_document()))

    await store.replace_all(Config())

    assert (await store.export()).is_empty()


@pytest.mark.parametrize(
    ("document", "error", "fields"),
    [
        (
            {
                "routes": [
                    {
                        "paths": ["/"],
                        "id": "6a3c4e2b-1f0d-4c8e-9b7a-000000000009",
                        "service": {"id": "6a3c4e2b-1f0d-4c8e-9b7a-000000000001"},
                    }
                ]
            },
            ForeignKeyViolation,
            {"service": {"id": "6a3c4e2b-1f0d-4c8e-9b7a-000000000001"}},
        ),
        (
            {
                "plugins": [
                    {"name": "cors", "id": "6a3c4e2b-1f0d-4c8e-9b7a-000000000001"},
                    {"name": "cors", "id": "6a3c4e2b-1f0d-4c8e-9b7a-000000000002"},
                ]
            },
            UniqueViolation,
            {"consumer": None, "name": "cors", "route": None, "service": None},
        ),
        (
            {
                "consumers": [
                    {"username": "a", "id": "6a3c4e2b-1f0d-4c8e-9b7a-000000000001"},
                    {"username": "b", "id": "6a3c4e2b-1f0d-4c8e-9b7a-000000000001"},
                ]
            },
            PrimaryKeyViolation,
            {"id": "6a3c4e2b-1f0d-4c8e-9b7a-000000000001"},
        ),
    ],
)
async def test_replace_all_refuses_an_inconsistent_config_and_changes_nothing(
    store: Store, document: dict[str, Any], error: type[Exception], fields: dict[str, Any]
) -> None:
    kept = await store.insert("consumers", entity("consumers", username="kept"))
    # Built by hand: the declarative loader would already refuse these.
    config = Config.build({kind: [entity(kind, **e) for e in items] for kind, items in document.items()})

    with pytest.raises(error) as caught:
        await store.replace_all(config)

    assert caught.value.fields == fields  # type: ignore[attr-defined]
    assert await store.config_version() == 1
    assert await store.get("consumers", kept["id"]) == kept


async def test_every_write_appends_one_revision_and_versions_have_no_gaps(store: Store) -> None:
    consumer = await store.insert("consumers", entity("consumers", username="ann"))
    await store.update("consumers", consumer["id"], {**consumer, "custom_id": "1"})
    await store.upsert("consumers", entity("consumers", username="bob"), by="username")
    with pytest.raises(UniqueViolation):
        await store.insert("consumers", entity("consumers", username="bob"))  # failed: no revision
    await store.delete("consumers", consumer["id"])
    assert await store.delete("consumers", consumer["id"]) is None  # nothing deleted: no revision
    await store.replace_all(Config())

    revisions = await store.revisions()

    assert [r.version for r in revisions] == [1, 2, 3, 4, 5]
    assert [r.op for r in revisions] == ["create", "update", "create", "delete", "replace_all"]
    assert revisions[1].entity is not None and revisions[1].entity["custom_id"] == "1"
    assert await store.config_version() == 5
    assert [r.version for r in await store.revisions(after=3, limit=1)] == [4]


async def test_two_stores_writing_at_once_lose_and_duplicate_no_revision(
    store: Store, bootstrapped: str
) -> None:
    shared = await store.insert("consumers", entity("consumers", username="shared"))
    async with Store.connect(bootstrapped, timeout=10) as other:

        def set_custom_id(value: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
            return lambda current: {**current, "custom_id": value}

        async def writer(s: Store, name: str) -> list[str]:
            created: list[str] = []
            for i in range(25):
                created.append(
                    (await s.insert("consumers", entity("consumers", username=f"{name}{i}")))["id"]
                )
                await s.patch("consumers", shared["id"], set_custom_id(f"{name}{i}"))
            return created

        mine, theirs = await asyncio.gather(writer(store, "a"), writer(other, "b"))

    revisions = await store.revisions(limit=1000)
    assert [r.version for r in revisions] == list(range(1, 102))
    creates = [str(r.entity_id) for r in revisions if r.op == "create"]
    assert sorted(creates) == sorted([shared["id"], *mine, *theirs])
    assert sum(1 for r in revisions if r.op == "update") == 50
    # The last update to commit is the one the entity shows.
    last_update = [r for r in revisions if r.op == "update"][-1]
    assert last_update.entity is not None
    assert (await store.get("consumers", shared["id"]))["custom_id"] == last_update.entity["custom_id"]  # type: ignore[index]


async def test_a_listener_hears_each_committed_write(store: Store) -> None:
    heard: asyncio.Queue[int] = asyncio.Queue()

    async with store.listen(heard.put_nowait):
        assert await asyncio.wait_for(heard.get(), 5) == 0  # the current version, on start
        await store.insert("consumers", entity("consumers", username="ann"))
        assert await asyncio.wait_for(heard.get(), 5) == 1
        await store.replace_all(Config())
        assert await asyncio.wait_for(heard.get(), 5) == 2


async def test_a_listener_reconnects_and_catches_up_on_what_it_missed(
    store: Store, bootstrapped: str
) -> None:
    heard: asyncio.Queue[int] = asyncio.Queue()
    admin = await connect(bootstrapped, connect_timeout=5)
    try:
        async with store.listen(heard.put_nowait, poll_interval=30) as listener:
            assert await asyncio.wait_for(heard.get(), 5) == 0
            pid = listener.backend_pid
            assert pid is not None
            # Cut the listener's connection, then write while it is gone: the NOTIFY is lost,
            # the version it reads on reconnecting is not.
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            await store.insert("consumers", entity("consumers", username="ann"))

            assert await asyncio.wait_for(heard.get(), 10) == 1
            # The new connection's NOTIFY can deliver version 1 before its catch-up read returns
            # and the reconnect is counted, so wait for the count rather than read it at once.
            for _ in range(100):
                if listener.reconnects:
                    break
                await asyncio.sleep(0.05)
            assert listener.reconnects == 1 and listener.backend_pid not in (None, pid)
            await store.insert("consumers", entity("consumers", username="bob"))
            assert await asyncio.wait_for(heard.get(), 5) == 2
    finally:
        await admin.close()


async def test_a_listener_polls_when_notifications_do_not_arrive(store: Store, bootstrapped: str) -> None:
    heard: asyncio.Queue[int] = asyncio.Queue()
    admin = await connect(bootstrapped, connect_timeout=5)
    try:
        async with store.listen(heard.put_nowait, poll_interval=0.2):
            assert await asyncio.wait_for(heard.get(), 5) == 0
            # A version bump without NOTIFY, as if the notification had been lost.
            await admin.execute("UPDATE config_state SET version = version + 1")
            assert await asyncio.wait_for(heard.get(), 5) == 1
    finally:
        await admin.close()
