"""The config tracker: the store's config moved forward by revisions equals a fresh snapshot."""

from __future__ import annotations

import random

from zonegate.control_plane import postgres
from zonegate.control_plane.config_tracker import ConfigTracker
from zonegate.control_plane.store import Store
from zonegate.core import canonical, declarative
from zonegate.core.config import Config

from .conftest import entity, ref
from .test_store_config import full_document


async def same_as_snapshot(tracker: ConfigTracker, store: Store) -> Config:
    tracked = await tracker.current()
    fresh = await store.snapshot()
    assert tracked.version == fresh.version
    assert tracked.config == fresh.config
    assert canonical.encode_config(tracked.config) == canonical.encode_config(fresh.config)
    return tracked.config


async def test_random_writes_tracked_by_revisions_equal_the_snapshot(store: Store) -> None:
    rng = random.Random(7)
    tracker = ConfigTracker(store)
    await same_as_snapshot(tracker, store)  # the first read is a whole snapshot
    services: list[dict[str, str]] = []
    routes: list[dict[str, str]] = []
    consumers: list[dict[str, str]] = []
    upstreams: list[dict[str, str]] = []
    for step in range(120):
        action = rng.randrange(10)
        if action == 0 or not services:
            stored = await store.insert("services", entity("services", name=f"s{step}", host="a.test"))
            services.append(ref(stored))
        elif action == 1:
            service = rng.choice(services)
            stored = await store.insert(
                "routes", entity("routes", name=f"r{step}", paths=[f"/p{step}"], service=service)
            )
            routes.append(ref(stored))
        elif action == 2 and routes:
            route = rng.choice(routes)
            await store.patch("routes", route["id"], lambda old, s=step: {**old, "paths": [f"/q{s}"]})
        elif action == 3:
            stored = await store.insert("consumers", entity("consumers", username=f"c{step}"))
            consumers.append(ref(stored))
            await store.insert(
                "keyauth_credentials", entity("keyauth_credentials", key=f"k{step}", consumer=ref(stored))
            )
            await store.insert(
                "plugins", entity("plugins", name="rate-limiting", consumer=ref(stored), config={"minute": 5})
            )
        elif action == 4 and consumers:
            # Cascades to its credentials and plugins: the revision lists them.
            await store.delete("consumers", consumers.pop(rng.randrange(len(consumers)))["id"])
        elif action == 5:
            stored = await store.insert("upstreams", entity("upstreams", name=f"u{step}.test"))
            upstreams.append(ref(stored))
            await store.insert(
                "targets", entity("targets", target=f"10.0.0.{step % 250}:80", upstream=ref(stored))
            )
        elif action == 6 and upstreams:
            await store.delete("upstreams", upstreams.pop()["id"])
        elif action == 7:
            service = rng.choice(services)
            await store.upsert(
                "services", entity("services", id=service["id"], name=f"s-put{step}", host="b.test")
            )
        elif action == 8 and routes:
            await store.delete("routes", routes.pop(rng.randrange(len(routes)))["id"])
        else:
            await store.upsert("consumers", entity("consumers", username=f"put{step}"), by="username")
        if rng.random() < 0.3:  # sometimes several revisions land between two reads
            await same_as_snapshot(tracker, store)
    await same_as_snapshot(tracker, store)
    assert tracker.incremental_reads > 20 and tracker.full_reads == 1


async def test_replace_all_and_changes_behind_the_stores_back_fall_back_to_a_snapshot(
    store: Store, bootstrapped: str
) -> None:
    tracker = ConfigTracker(store, full_every=3)
    await same_as_snapshot(tracker, store)
    await store.replace_all(declarative.load(full_document()))
    await same_as_snapshot(tracker, store)
    assert tracker.full_reads == 2  # replace_all: read whole

    # A revision missing (deleted by hand): the tracker notices the gap and reads whole.
    service = await store.insert("services", entity("services", name="gap", host="a.test"))
    conn = await postgres.connect(bootstrapped, connect_timeout=10)
    try:
        await conn.execute("DELETE FROM revisions WHERE version = (SELECT max(version) FROM revisions)")
    finally:
        await conn.close()
    await same_as_snapshot(tracker, store)
    assert tracker.full_reads == 3

    # A row changed in SQL without a revision is picked up by the periodic whole read.
    conn = await postgres.connect(bootstrapped, connect_timeout=10)
    try:
        await conn.execute("UPDATE services SET name = 'by-hand' WHERE id = $1", service["id"])
    finally:
        await conn.close()
    for step in range(3):
        await store.insert("consumers", entity("consumers", username=f"after{step}"))
        await tracker.current()
    config = await same_as_snapshot(tracker, store)
    assert config.by_id("services")[service["id"]]["name"] == "by-hand"
