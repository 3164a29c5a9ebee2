"""Pages, offsets and tags: Kong's list endpoints over the store."""

from __future__ import annotations

import asyncio
import base64

import pytest

from zonegate.control_plane.errors import InvalidOffset
from zonegate.control_plane.store import Store, TagRow

from .conftest import entity, ref


async def all_pages(store: Store, kind: str, size: int, **filters: object) -> list[list[str]]:
    pages: list[list[str]] = []
    offset: str | None = None
    while True:
        found, offset = await store.page(kind, size, offset, **filters)  # type: ignore[arg-type]
        pages.append([e["id"] for e in found])
        if offset is None:
            return pages


async def test_pages_cover_everything_once_in_id_order(store: Store) -> None:
    ids = sorted(
        [(await store.insert("consumers", entity("consumers", username=f"u{i}")))["id"] for i in range(25)]
    )

    pages = await all_pages(store, "consumers", 10)

    assert [len(p) for p in pages] == [10, 10, 5]
    assert [i for p in pages for i in p] == ids


async def test_an_exact_multiple_has_no_empty_last_page(store: Store) -> None:
    for i in range(4):
        await store.insert("consumers", entity("consumers", username=f"u{i}"))

    pages = await all_pages(store, "consumers", 2)

    assert [len(p) for p in pages] == [2, 2]


async def test_concurrent_writes_between_pages_neither_skip_nor_repeat_existing_rows(store: Store) -> None:
    before = {
        (await store.insert("consumers", entity("consumers", username=f"old{i}")))["id"] for i in range(30)
    }
    seen: list[str] = []
    offset: str | None = None
    writer_rounds = 0

    while True:
        found, offset = await store.page("consumers", 7, offset)
        seen += [e["id"] for e in found]
        # Between pages: new consumers (random ids, so before and after the cursor) and the
        # deletion of one that was not read yet, all from concurrent tasks.
        writer_rounds += 1
        await asyncio.gather(
            *(
                store.insert("consumers", entity("consumers", username=f"new{writer_rounds}-{i}"))
                for i in range(3)
            )
        )
        if offset is None:
            break

    assert len(seen) == len(set(seen)), "a row was returned twice"
    assert before <= set(seen), "a row that existed before the first page was skipped"
    assert seen == sorted(seen)


async def test_children_of_one_parent(store: Store) -> None:
    service = await store.insert("services", entity("services", host="a.internal"))
    other = await store.insert("services", entity("services", host="b.internal"))
    mine = sorted(
        [
            (await store.insert("routes", entity("routes", paths=[f"/{i}"], service=ref(service))))["id"]
            for i in range(5)
        ]
    )
    await store.insert("routes", entity("routes", paths=["/other"], service=ref(other)))

    pages = await all_pages(store, "routes", 2, foreign=("service", service["id"]))

    assert [i for p in pages for i in p] == mine
    assert await store.page("routes", foreign=("service", "not-a-uuid")) == ([], None)


async def test_tags_all_is_and_tags_any_is_or(store: Store) -> None:
    a = await store.insert("services", entity("services", host="a.internal", tags=["prod", "eu"]))
    b = await store.insert("services", entity("services", host="b.internal", tags=["prod", "us"]))
    c = await store.insert("services", entity("services", host="c.internal", tags=["dev", "eu"]))
    await store.insert("services", entity("services", host="d.internal"))

    async def ids(**filters: object) -> set[str]:
        return {i for p in await all_pages(store, "services", 1, **filters) for i in p}

    assert await ids(tags_all=["prod"]) == {a["id"], b["id"]}
    assert await ids(tags_all=["prod", "eu"]) == {a["id"]}
    assert await ids(tags_any=["us", "dev"]) == {b["id"], c["id"]}
    assert await ids(tags_any=["nothing"]) == set()
    with pytest.raises(ValueError, match="not both"):
        await store.page("services", tags_all=["a"], tags_any=["b"])


async def test_tag_listing_over_every_kind_and_per_tag(store: Store) -> None:
    service = await store.insert("services", entity("services", host="a.internal", tags=["prod", "eu"]))
    consumer = await store.insert("consumers", entity("consumers", username="ann", tags=["prod"]))
    key = await store.insert(
        "keyauth_credentials", entity("keyauth_credentials", consumer=ref(consumer), key="k", tags=["eu"])
    )

    everything: list[TagRow] = []
    offset: str | None = None
    while True:
        found, offset = await store.tags(2, offset)
        everything += found
        if offset is None:
            break
    prod, prod_offset = await store.tags(10, tag="prod")

    assert everything == sorted(
        [
            TagRow("eu", "keyauth_credentials", key["id"]),
            TagRow("eu", "services", service["id"]),
            TagRow("prod", "consumers", consumer["id"]),
            TagRow("prod", "services", service["id"]),
        ],
        key=lambda r: (r.tag, r.entity_name, r.entity_id),
    )
    assert prod == [TagRow("prod", "consumers", consumer["id"]), TagRow("prod", "services", service["id"])]
    assert prod_offset is None


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        ("%%%", "bad base64 encoding"),
        (base64.urlsafe_b64encode(b"not json").decode(), "bad json encoding"),
        (base64.urlsafe_b64encode(b'["not-a-uuid"]').decode(), "unexpected content"),
    ],
)
async def test_an_offset_we_did_not_hand_out_is_invalid(store: Store, offset: str, reason: str) -> None:
    with pytest.raises(InvalidOffset) as caught:
        await store.page("services", 10, offset)

    assert caught.value.body() == {
        "code": 7,
        "name": "invalid offset",
        "message": f"'{offset}' is not a valid offset: {reason}",
    }
