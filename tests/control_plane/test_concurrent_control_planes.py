"""Two control plane processes on one database, written to at the same time by many clients.

Both shapes of node that write to PostgreSQL are tried: ``control_plane`` (Admin API and the
hybrid half) and ``traditional`` (Admin API and a proxy that follows every committed version).

What the store promises (``control_plane/store.py``): every successful write is one transaction
that bumps ``config_state.version``, writes, and appends exactly one ``revisions`` row with that
version and a NOTIFY; a write that fails leaves no trace. With two processes and a few dozen
writes in flight, that means versions with no gap and no repeat, one revision per successful
write and none for a failed one, notifications in version order, and Kong's statuses: one 201
per contested name and 409 for the other attempts, never a 500.

A version bumped outside the write's transaction leaves a gap after every 409; one read and
written back instead of incremented in place gives two writes one version (a 500 on the
revisions primary key). Either fails this test.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from zonegate.control_plane import postgres
from zonegate.control_plane.store import NOTIFY_CHANNEL, Store
from zonegate.embedded.ports import free_port

from .conftest import empty_database, entity, ref
from .test_admin_process import ControlPlane, cluster_settings, environment

PLANES = ("a", "b")
CREATED = 80  # per plane: services only that plane creates
CONTESTED = 20  # names both planes try to create, twice each: four attempts per name
HOT = 20  # services both planes PATCH (twice each per plane) and add routes to (once each)
DELETED_ALONE = 10  # per plane: services only that plane deletes
DELETED_BY_BOTH = 10  # services both planes delete: two 204s, one revision
IN_FLIGHT = 8  # concurrent requests per plane
UNIQUE_VIOLATION = 5  # Kong's error code for a 409


@dataclass(frozen=True)
class Write:
    plane: int
    method: str
    path: str
    body: dict[str, Any] | None
    expect: frozenset[int]

    @property
    def name(self) -> str:
        """The entity's name: from the body of a create, from the path of a delete."""
        return str(self.body["name"]) if self.body and "name" in self.body else self.path.rsplit("/", 1)[1]


@dataclass(frozen=True)
class Answer:
    write: Write
    status: int
    body: Any


def writes_for(plane: int) -> list[Write]:
    """200 writes: creates, contested creates, PATCHes, nested creates, deletes."""
    label = PLANES[plane]
    created = frozenset({201})
    writes = [
        Write(plane, "POST", "/services", {"name": f"{label}-{i}", "host": f"{label}-{i}.internal"}, created)
        for i in range(CREATED)
    ]
    writes += [
        Write(
            plane,
            "POST",
            "/services",
            {"name": f"contested-{i}", "host": "x.internal"},
            frozenset({201, 409}),
        )
        for i in list(range(CONTESTED)) * 2
    ]
    writes += [
        Write(plane, "PATCH", f"/services/hot-{i}", {"retries": 1000 * plane + n}, frozenset({200}))
        for n, i in enumerate(list(range(HOT)) * 2)
    ]
    writes += [
        Write(
            plane,
            "POST",
            f"/services/hot-{i}/routes",
            {"name": f"{label}-route-{i}", "paths": [f"/{label}/{i}"]},
            created,
        )
        for i in range(HOT)
    ]
    alone = range(plane * DELETED_ALONE, (plane + 1) * DELETED_ALONE)
    both = range(2 * DELETED_ALONE, 2 * DELETED_ALONE + DELETED_BY_BOTH)
    writes += [Write(plane, "DELETE", f"/services/gone-{i}", None, frozenset({204})) for i in (*alone, *both)]
    return writes


async def send(session: aiohttp.ClientSession, base: str, write: Write, gate: asyncio.Semaphore) -> Answer:
    async with gate, session.request(write.method, base + write.path, json=write.body) as response:
        text = await response.text()
        body = await response.json() if text and response.content_type == "application/json" else None
        return Answer(write, response.status, body)


async def prepare(dsn: str) -> int:
    """The services the planes update and delete; the version after them."""
    async with Store.connect(dsn, timeout=10) as store:
        for i in range(HOT):
            await store.insert("services", entity("services", name=f"hot-{i}", host="hot.internal"))
        for i in range(2 * DELETED_ALONE + DELETED_BY_BOTH):
            gone = await store.insert("services", entity("services", name=f"gone-{i}", host="gone.internal"))
            # A plugin that cascades with it: the delete is still one revision.
            await store.insert("plugins", entity("plugins", name="cors", service=ref(gone)))
        return await store.config_version()


class Announcements:
    """Every version NOTIFY announces, in the order it arrives."""

    def __init__(self) -> None:
        self.versions: list[int] = []
        self._arrived = asyncio.Event()

    def __call__(self, payload: str) -> None:
        self.versions.append(int(payload))
        self._arrived.set()

    async def wait_until(self, last: int) -> None:
        """Until ``last`` is announced, or 10 s: the caller's assertions show what is missing."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while not self.versions or self.versions[-1] < last:
                    self._arrived.clear()
                    await self._arrived.wait()


@pytest.fixture
def dsn(bootstrapped: str) -> str:
    asyncio.run(empty_database(bootstrapped))
    return bootstrapped


def role_settings(role: str, certs: Path) -> dict[str, str]:
    """A control plane with its hybrid half (no NATS there: it never publishes), or a traditional
    node (its proxy follows every committed version), on ports of its own."""
    if role == "control_plane":
        return {"role": role, **cluster_settings(certs)}
    return {
        "role": role,
        "proxy_listen": f"127.0.0.1:{free_port()}",
        "status_listen": f"127.0.0.1:{free_port()}",
        "workers": "1",
    }


@pytest.fixture(params=["control_plane", "traditional"])
def planes(request: pytest.FixtureRequest, dsn: str, tmp_path: Path) -> Iterator[list[ControlPlane]]:
    started: list[ControlPlane] = []
    try:
        for label in PLANES:
            port = free_port()
            settings = role_settings(request.param, tmp_path / "certs")
            env = environment(dsn, tmp_path / f"prefix-{label}", admin_listen=f"127.0.0.1:{port}", **settings)
            node = ControlPlane(env, port, tmp_path / f"cp-{label}.log")
            started.append(node)
            node.start()
        yield started
    finally:
        for node in started:
            if node.process is not None:
                node.stop()


@pytest.fixture
async def notified(dsn: str) -> AsyncIterator[Announcements]:
    announcements = Announcements()
    conn = await postgres.connect(dsn, connect_timeout=10)
    try:
        await conn.add_listener(NOTIFY_CHANNEL, announcements)
        yield announcements
    finally:
        await conn.close()


async def test_two_control_planes_take_concurrent_writes_without_lost_or_duplicated_revisions(
    dsn: str, planes: list[ControlPlane], notified: Announcements
) -> None:
    before = await prepare(dsn)
    await notified.wait_until(before)
    notified.versions.clear()
    writes = writes_for(0) + writes_for(1)
    random.Random(7).shuffle(writes)  # contested names and shared deletes race across the planes

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as a, aiohttp.ClientSession(timeout=timeout) as b:
        sessions, gates = (a, b), (asyncio.Semaphore(IN_FLIGHT), asyncio.Semaphore(IN_FLIGHT))
        answers = await asyncio.gather(
            *(send(sessions[w.plane], planes[w.plane].url, w, gates[w.plane]) for w in writes)
        )

    async with Store.connect(dsn, timeout=10) as store:
        after = await store.config_version()
        await notified.wait_until(after)
        revisions = await store.revisions(after=0, limit=after + 10)
        services, _ = await store.page("services", 1000)
        routes, _ = await store.page("routes", 1000)
    logs = "\n".join(node.log() for node in planes)

    # Kong's statuses, and never a 500.
    unexpected = [
        (a.write.method, a.write.path, a.status, a.body) for a in answers if a.status not in a.write.expect
    ]
    assert unexpected == [], logs
    assert "Traceback" not in logs
    contested = [a for a in answers if a.write.name.startswith("contested-")]
    assert Counter(a.write.name for a in contested if a.status == 201) == {
        f"contested-{i}": 1 for i in range(CONTESTED)
    }
    assert {a.write.plane for a in contested if a.status == 201} == {0, 1}  # both won some races
    conflicts = [a for a in contested if a.status == 409]
    assert len(conflicts) == 3 * CONTESTED
    assert {(a.body["code"], a.body["fields"]["name"] == a.write.name) for a in conflicts} == {
        (UNIQUE_VIOLATION, True)
    }

    created = Counter(a.body["id"] for a in answers if a.status == 201)
    updated = Counter(a.body["id"] for a in answers if a.status == 200)
    deleted = {a.write.name for a in answers if a.status == 204}
    successful = sum(created.values()) + sum(updated.values()) + len(deleted)
    assert successful == 2 * CREATED + CONTESTED + 2 * 2 * HOT + 2 * HOT + 2 * DELETED_ALONE + DELETED_BY_BOTH

    # One revision per successful write, versions before+1 .. after with no gap and no repeat, and
    # the whole log still 1 .. after: nothing written before the storm was lost or renumbered.
    assert after - before == successful
    assert [r.version for r in revisions] == list(range(1, after + 1))
    new = [r for r in revisions if r.version > before]
    assert Counter(r.entity_id for r in new if r.op == "create") == created
    assert Counter(r.entity_id for r in new if r.op == "update") == updated
    assert sorted(r.entity["name"] for r in new if r.op == "delete" and r.entity) == sorted(deleted)
    # Each version announced once, in order: commits happen in version order.
    assert notified.versions == list(range(before + 1, after + 1))

    # Every acknowledged write is there to read, and each hot service is its last revision.
    by_id = {e["id"]: e for e in services + routes}
    assert set(created) <= set(by_id)
    assert not [s["name"] for s in services if s["name"].startswith("gone-")]
    last_update = {r.entity_id: r.entity for r in new if r.op == "update"}
    assert len(last_update) == HOT
    assert {i: by_id[i]["retries"] for i in last_update} == {
        i: e["retries"] for i, e in last_update.items() if e is not None
    }
