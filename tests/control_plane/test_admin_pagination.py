"""Kong's list pages: size and offset, tag filters, ``next`` links, and ``/tags``."""

from __future__ import annotations

import asyncio

import pytest

from . import admin_fixtures
from .admin_fixtures import Admin

admin = admin_fixtures.admin


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("0", "size must be an integer between 1 and 1000"),
        ("1001", "size must be an integer between 1 and 1000"),
        ("2.5", "size must be an integer between 1 and 1000"),
        ("many", "size must be a number"),
        ("", "size must be a number"),
    ],
)
async def test_invalid_sizes(admin: Admin, size: str, message: str) -> None:
    reply = await admin.get(f"/services?size={size}")

    assert reply.status == 400
    assert reply.body == {"code": 9, "name": "invalid size", "message": message}


async def test_an_offset_the_store_did_not_hand_out(admin: Admin) -> None:
    reply = await admin.get("/services?offset=bm9wZQ")

    assert reply.status == 400
    assert reply.body == {
        "code": 7,
        "name": "invalid offset",
        "message": "'bm9wZQ' is not a valid offset: bad json encoding",
    }


async def test_pages_see_every_entity_once_while_others_are_added(admin: Admin) -> None:
    originals = {
        (await admin.created("/consumers", json={"username": f"user-{i:02}"}))["id"] for i in range(23)
    }
    stop = asyncio.Event()
    written = 0

    async def writer() -> None:
        # Inserts all along the paging: keyset offsets neither skip nor repeat rows that were there.
        nonlocal written
        while not stop.is_set():
            await admin.created("/consumers", json={"username": f"late-{written}"})
            written += 1

    task = asyncio.create_task(writer())
    seen: list[str] = []
    path: str | None = "/consumers?size=5"
    pages = 0
    try:
        while path is not None:
            page = await admin.get(path)
            assert page.status == 200
            seen.extend(c["id"] for c in page.body["data"])
            path = page.body["next"]
            if path is not None:
                assert page.body["offset"] in path and path.endswith("&size=5")
            else:
                assert "offset" not in page.body
            pages += 1
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task

    assert written > 0
    assert len(seen) == len(set(seen))
    assert originals <= set(seen)
    assert pages >= 5


async def test_tags_and_or_and_their_errors(admin: Admin) -> None:
    for name, tags in [("ab", ["a", "b"]), ("a", ["a"]), ("b", ["b"]), ("c", ["c"]), ("none", None)]:
        await admin.created("/services", json={"name": name, "host": "x.internal", "tags": tags})

    async def names(query: str) -> list[str]:
        reply = await admin.get(f"/services?{query}")
        assert reply.status == 200, reply.body
        return sorted(s["name"] for s in reply.body["data"])

    assert await names("tags=a,b") == ["ab"]
    assert await names("tags=a") == ["a", "ab"]
    assert await names("tags=a/b") == ["a", "ab", "b"]
    assert await names("tags=c/b") == ["ab", "b", "c"]
    assert await names("tags=zzz") == []
    mixed = await admin.get("/services?tags=a,b/c")
    too_many = await admin.get("/services?tags=a,b,c,d,e,f")
    assert mixed.status == 400
    assert mixed.body == {
        "code": 11,
        "name": "invalid options",
        "message": "invalid option (tags: invalid filter syntax)",
        "options": {"tags": "invalid filter syntax"},
    }
    assert too_many.status == 400
    assert too_many.body["options"] == {"tags": "cannot query more than 5 tags"}


async def test_next_links_keep_tags_and_size_at_top_level_only(admin: Admin) -> None:
    await admin.created("/services", json={"name": "billing", "host": "x.internal"})
    for i in range(3):
        await admin.created("/services/billing/routes", json={"paths": [f"/{i}"], "tags": ["t 1", "u"]})

    top = await admin.get("/routes?size=2&tags=t%201,u")
    nested = await admin.get("/services/billing/routes?size=2&tags=u")
    rest = await admin.get(nested.body["next"])

    offset = top.body["offset"]
    assert top.body["next"] == f"/routes?offset={offset}&tags=t%201%2Cu&size=2"
    assert nested.body["next"] == f"/services/billing/routes?offset={nested.body['offset']}"
    assert len(nested.body["data"]) == 2 and len(rest.body["data"]) == 1


async def test_tags_listing(admin: Admin) -> None:
    service = await admin.created(
        "/services", json={"name": "billing", "host": "x.internal", "tags": ["a", "b"]}
    )
    consumer = await admin.created("/consumers", json={"username": "ann", "tags": ["a"]})

    everything = await admin.get("/tags")
    one = await admin.get("/tags/a?size=1")
    second = await admin.get(one.body["next"])
    invalid = await admin.get("/tags/a,b")

    assert everything.body == {
        "data": [
            {"entity_name": "consumers", "entity_id": consumer["id"], "tag": "a"},
            {"entity_name": "services", "entity_id": service["id"], "tag": "a"},
            {"entity_name": "services", "entity_id": service["id"], "tag": "b"},
        ],
        "next": None,
    }
    assert one.body["data"] == [{"entity_name": "consumers", "entity_id": consumer["id"], "tag": "a"}]
    assert one.body["next"].startswith("/tags/a?offset=")
    assert second.body == {
        "data": [{"entity_name": "services", "entity_id": service["id"], "tag": "a"}],
        "next": None,
    }
    assert invalid.status == 400
    assert invalid.body == {
        "code": 10,
        "name": "invalid unique tag",
        "message": "invalid tag 'a,b': "
        "expected printable ascii (except `,` and `/`) or valid utf-8 sequences",
    }
