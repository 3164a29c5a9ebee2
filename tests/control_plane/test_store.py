"""The store's single-entity operations, and the Kong error bodies they fail with."""

from __future__ import annotations

import pytest

from zonegate.control_plane.errors import (
    ForeignKeyViolation,
    NotFound,
    PrimaryKeyViolation,
    SchemaNotReady,
    StoreUnavailable,
    UniqueViolation,
)
from zonegate.control_plane.postgres import connect
from zonegate.control_plane.store import Store
from zonegate.core.entities import schema_for
from zonegate.core.errors import SchemaViolation

from .conftest import entity, ref

MISSING_ID = "6a3c4e2b-1f0d-4c8e-9b7a-000000000001"


async def test_insert_fills_id_and_timestamps_and_reads_back_the_schema_shape(store: Store) -> None:
    given = entity("services", name="billing", url="https://billing.internal:8443/v1", tags=["team-a"])
    assert given["id"] is None and given["created_at"] is None

    stored = await store.insert("services", given)

    assert list(stored) == list(schema_for("services").field_names)
    assert isinstance(stored["created_at"], int) and stored["created_at"] == stored["updated_at"]
    assert stored == {
        **given,
        "id": stored["id"],
        "created_at": stored["created_at"],
        "updated_at": stored["updated_at"],
    }
    assert await store.get("services", stored["id"]) == stored


async def test_insert_keeps_a_given_id_lower_cased_and_a_given_created_at(store: Store) -> None:
    given = entity("consumers", id="6A3C4E2B-1F0D-4C8E-9B7A-0000000000AA", username="ann", created_at=1000)

    stored = await store.insert("consumers", given)

    assert stored["id"] == "6a3c4e2b-1f0d-4c8e-9b7a-0000000000aa"
    assert stored["created_at"] == 1000


async def test_insert_with_a_taken_id_is_a_primary_key_violation(store: Store) -> None:
    first = await store.insert("consumers", entity("consumers", username="ann"))

    with pytest.raises(PrimaryKeyViolation) as caught:
        await store.insert("consumers", entity("consumers", id=first["id"], username="bob"))

    assert caught.value.body() == {
        "code": 3,
        "name": "primary key violation",
        "message": f"primary key violation on key '{{id=\"{first['id']}\"}}'",
        "fields": {"id": first["id"]},
    }


async def test_credentials_have_only_created_at(store: Store) -> None:
    consumer = await store.insert("consumers", entity("consumers", username="ann"))

    key = await store.insert(
        "keyauth_credentials", entity("keyauth_credentials", consumer=ref(consumer), key="k1")
    )

    assert "updated_at" not in key
    assert isinstance(key["created_at"], int)
    assert key["consumer"] == ref(consumer) and key["ttl"] is None


async def test_nested_free_form_fields_round_trip_exactly(store: Store) -> None:
    upstream = await store.insert(
        "upstreams",
        entity(
            "upstreams",
            name="pool.internal",
            healthchecks={"active": {"healthy": {"interval": 2.5, "successes": 3}}, "threshold": 33.3},
        ),
    )
    route = await store.insert(
        "routes",
        entity(
            "routes",
            protocols=["tcp"],
            sources=[{"ip": "10.0.0.0/8", "port": 1234}, {"ip": "192.168.0.1"}],
            destinations=[{"port": 443}],
        ),
    )
    plugin = await store.insert(
        "plugins",
        entity(
            "plugins",
            name="my-custom-plugin",  # no schema: a free-form config, stored as it is
            config={
                "add": {"headers": ["x-ünïcode:✓"], "json": []},
                "ratio": 0.1,
                "big": 2**53,
                "none": None,
            },
            route=ref(route),
        ),
    )
    headers_route = await store.insert(
        "routes", entity("routes", paths=["/h"], headers={"x-version": ["1", "~*^2\\.[0-9]+$"]})
    )

    assert await store.get("upstreams", upstream["id"]) == upstream
    assert upstream["healthchecks"]["active"]["healthy"]["interval"] == 2.5
    assert upstream["healthchecks"]["passive"]["unhealthy"]["http_statuses"] == [429, 500, 503]
    assert (await store.get("routes", route["id"]))["sources"] == [  # type: ignore[index]
        {"ip": "10.0.0.0/8", "port": 1234},
        {"ip": "192.168.0.1", "port": None},
    ]
    assert (await store.get("plugins", plugin["id"]))["config"] == {  # type: ignore[index]
        "add": {"headers": ["x-ünïcode:✓"], "json": []},
        "ratio": 0.1,
        "big": 2**53,
        "none": None,
    }
    assert (await store.get("routes", headers_route["id"]))["headers"] == {  # type: ignore[index]
        "x-version": ["1", "~*^2\\.[0-9]+$"]
    }


async def test_explicit_null_survives_and_a_field_missing_from_the_row_reads_as_its_default(
    store: Store, bootstrapped: str
) -> None:
    # A field a later version adds (with a default) needs no migration: rows written before it
    # read back with the default, while an explicit null stays null.
    service = await store.insert("services", entity("services", host="a.internal", retries=None))
    upstream = await store.insert("upstreams", entity("upstreams", name="u.internal"))
    conn = await connect(bootstrapped, connect_timeout=5)
    try:
        await conn.execute("UPDATE services SET entity = entity - 'read_timeout'")
        await conn.execute("UPDATE upstreams SET entity = entity - 'healthchecks'")
    finally:
        await conn.close()

    read_service = await store.get("services", service["id"])
    read_upstream = await store.get("upstreams", upstream["id"])

    assert read_service is not None and read_upstream is not None
    assert read_service["retries"] is None
    assert read_service["read_timeout"] == 60000
    # A record's default comes with its nested defaults, as validation fills them.
    assert read_upstream["healthchecks"] == upstream["healthchecks"]
    assert read_upstream["healthchecks"]["active"]["timeout"] == 1


async def test_get_of_an_unknown_or_malformed_id_is_none(store: Store) -> None:
    assert await store.get("services", MISSING_ID) is None
    assert await store.get("services", "not-a-uuid") is None


async def test_get_by_key_uses_the_endpoint_key_or_another_unique_field(store: Store) -> None:
    consumer = await store.insert("consumers", entity("consumers", username="ann", custom_id="crm-1"))
    upstream_a = await store.insert("upstreams", entity("upstreams", name="a.internal"))
    upstream_b = await store.insert("upstreams", entity("upstreams", name="b.internal"))
    target_a = await store.insert("targets", entity("targets", upstream=ref(upstream_a), target="10.0.0.1"))
    target_b = await store.insert("targets", entity("targets", upstream=ref(upstream_b), target="10.0.0.1"))

    assert await store.get_by_key("consumers", "ann") == consumer
    assert await store.get_by_key("consumers", "crm-1", field="custom_id") == consumer
    assert await store.get_by_key("consumers", "nobody") is None
    # A target's address is unique only within its upstream.
    assert target_a["target"] == "10.0.0.1:8000"
    assert (
        await store.get_by_key("targets", "10.0.0.1:8000", foreign=("upstream", upstream_a["id"])) == target_a
    )
    assert (
        await store.get_by_key("targets", "10.0.0.1:8000", foreign=("upstream", upstream_b["id"])) == target_b
    )
    with pytest.raises(ValueError, match="endpoint key"):
        await store.get_by_key("acls", "admins")


async def test_update_replaces_fields_keeps_created_at_and_moves_updated_at(store: Store) -> None:
    stored = await store.insert("services", entity("services", name="s", host="a.internal", created_at=1000))

    changed = await store.update("services", stored["id"], {**stored, "host": "b.internal", "port": 8080})

    assert changed["host"] == "b.internal" and changed["port"] == 8080
    assert changed["created_at"] == 1000
    assert changed["updated_at"] >= stored["updated_at"] > 1000
    assert await store.get("services", stored["id"]) == changed


async def test_update_of_a_missing_entity_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await store.update("services", MISSING_ID, entity("services", host="a.internal"))

    assert caught.value.body() == {
        "code": 6,
        "name": "not found",
        "message": f"could not find the entity with primary key '{{id=\"{MISSING_ID}\"}}'",
        "fields": {"id": MISSING_ID},
    }
    assert await store.config_version() == 0


async def test_upsert_creates_then_replaces_everything_but_id_and_created_at(store: Store) -> None:
    given = entity(
        "services", id=MISSING_ID, name="s", host="a.internal", retries=9, tags=["x"], created_at=1000
    )

    created = await store.upsert("services", given)
    replaced = await store.upsert("services", entity("services", id=MISSING_ID, name="s", host="b.internal"))

    assert created["retries"] == 9 and created["created_at"] == 1000
    # PUT semantics: what the new body leaves out goes back to its default.
    assert replaced["retries"] == 5 and replaced["tags"] is None and replaced["host"] == "b.internal"
    assert replaced["id"] == MISSING_ID and replaced["created_at"] == 1000
    assert [r.op for r in await store.revisions()] == ["create", "update"]


async def test_upsert_by_endpoint_key_keeps_the_existing_id(store: Store) -> None:
    first = await store.upsert("consumers", entity("consumers", username="ann", custom_id="1"), by="username")
    second = await store.upsert(
        "consumers", entity("consumers", username="ann", custom_id="2"), by="username"
    )
    upstream = await store.insert("upstreams", entity("upstreams", name="u.internal"))
    target = entity("targets", upstream=ref(upstream), target="10.0.0.1:80", weight=10)
    t1 = await store.upsert("targets", target, by="target")
    t2 = await store.upsert("targets", {**target, "weight": 20}, by="target")

    assert second["id"] == first["id"] and second["custom_id"] == "2"
    assert t2["id"] == t1["id"] and t2["weight"] == 20
    assert [r.op for r in await store.revisions()] == ["create", "update", "create", "create", "update"]


async def test_patch_changes_the_entity_read_inside_the_write(store: Store) -> None:
    stored = await store.insert("services", entity("services", name="s", host="a.internal"))
    schema = schema_for("services")

    patched = await store.patch(
        "services", stored["id"], lambda current: schema.validate({**current, "port": 81})
    )

    assert patched["port"] == 81 and patched["host"] == "a.internal"


async def test_a_failing_patch_rolls_back_without_a_revision(store: Store) -> None:
    stored = await store.insert("services", entity("services", name="s", host="a.internal"))
    schema = schema_for("services")
    version = await store.config_version()

    with pytest.raises(SchemaViolation):
        await store.patch("services", stored["id"], lambda current: schema.validate({**current, "port": -1}))
    with pytest.raises(NotFound):
        await store.patch("services", MISSING_ID, lambda current: current)

    assert await store.config_version() == version
    assert await store.get("services", stored["id"]) == stored


async def test_delete_returns_the_entity_once_then_none(store: Store) -> None:
    stored = await store.insert("consumers", entity("consumers", username="ann"))

    assert await store.delete("consumers", stored["id"]) == stored
    assert await store.delete("consumers", stored["id"]) is None
    assert await store.get("consumers", stored["id"]) is None
    assert [r.op for r in await store.revisions()] == ["create", "delete"]


# -- unique violations: the fields Kong's 409 body carries --------------------------------------------


async def test_unique_name_violation_has_kongs_409_body(store: Store) -> None:
    await store.insert("services", entity("services", name="x", host="a.internal"))

    with pytest.raises(UniqueViolation) as caught:
        await store.insert("services", entity("services", name="x", host="b.internal"))

    assert caught.value.body() == {
        "code": 5,
        "name": "unique constraint violation",
        "message": "UNIQUE violation detected on '{name=\"x\"}'",
        "fields": {"name": "x"},
    }


@pytest.mark.parametrize(
    ("kind", "fields", "field"),
    [
        ("consumers", {"username": "u", "custom_id": "c"}, "custom_id"),
        ("upstreams", {"name": "up.internal"}, "name"),
        ("routes", {"name": "r", "paths": ["/"]}, "name"),
    ],
)
async def test_every_unique_field_reports_itself(
    store: Store, kind: str, fields: dict[str, str], field: str
) -> None:
    await store.insert(kind, entity(kind, **fields))
    clash = {**fields, "username": "other"} if kind == "consumers" else fields

    with pytest.raises(UniqueViolation) as caught:
        await store.insert(kind, entity(kind, **clash))

    assert caught.value.fields == {field: fields[field]}


async def test_unique_violation_on_update_and_on_credentials(store: Store) -> None:
    consumer = await store.insert("consumers", entity("consumers", username="ann"))
    other = await store.insert("consumers", entity("consumers", username="bob"))
    await store.insert("keyauth_credentials", entity("keyauth_credentials", consumer=ref(consumer), key="k"))

    with pytest.raises(UniqueViolation) as on_update:
        await store.update("consumers", other["id"], {**other, "username": "ann"})
    with pytest.raises(UniqueViolation) as on_key:
        await store.insert("keyauth_credentials", entity("keyauth_credentials", consumer=ref(other), key="k"))

    assert on_update.value.fields == {"username": "ann"}
    assert on_key.value.message == "UNIQUE violation detected on '{key=\"k\"}'"


async def test_plugin_cache_key_treats_absent_scopes_as_equal(store: Store) -> None:
    route = await store.insert("routes", entity("routes", paths=["/"]))
    await store.insert("plugins", entity("plugins", name="key-auth", route=ref(route)))
    await store.insert("plugins", entity("plugins", name="cors"))
    # The same plugin on another scope is fine.
    await store.insert("plugins", entity("plugins", name="key-auth"))

    with pytest.raises(UniqueViolation) as scoped:
        await store.insert("plugins", entity("plugins", name="key-auth", route=ref(route)))
    with pytest.raises(UniqueViolation) as global_:
        await store.insert("plugins", entity("plugins", name="cors", config={"origins": ["*"]}))

    assert scoped.value.body() == {
        "code": 5,
        "name": "unique constraint violation",
        "message": (
            "UNIQUE violation detected on "
            f'\'{{consumer=null,name="key-auth",route={{id="{route["id"]}"}},service=null}}\''
        ),
        "fields": {"consumer": None, "name": "key-auth", "route": ref(route), "service": None},
    }
    assert global_.value.fields == {"consumer": None, "name": "cors", "route": None, "service": None}


async def test_target_and_acl_cache_keys(store: Store) -> None:
    upstream = await store.insert("upstreams", entity("upstreams", name="u.internal"))
    consumer = await store.insert("consumers", entity("consumers", username="ann"))
    await store.insert("targets", entity("targets", upstream=ref(upstream), target="10.0.0.1"))
    await store.insert("acls", entity("acls", consumer=ref(consumer), group="admins"))

    with pytest.raises(UniqueViolation) as target:
        await store.insert("targets", entity("targets", upstream=ref(upstream), target="10.0.0.1:8000"))
    with pytest.raises(UniqueViolation) as acl:
        await store.insert("acls", entity("acls", consumer=ref(consumer), group="admins"))

    assert target.value.fields == {"target": "10.0.0.1:8000", "upstream": ref(upstream)}
    assert target.value.message == (
        f'UNIQUE violation detected on \'{{target="10.0.0.1:8000",upstream={{id="{upstream["id"]}"}}}}\''
    )
    assert acl.value.fields == {"consumer": ref(consumer), "group": "admins"}


# -- foreign keys on write ---------------------------------------------------------------------------


async def test_a_foreign_key_to_nothing_has_kongs_400_body(store: Store) -> None:
    with pytest.raises(ForeignKeyViolation) as caught:
        await store.insert("routes", entity("routes", paths=["/"], service={"id": MISSING_ID}))

    assert caught.value.body() == {
        "code": 4,
        "name": "foreign key violation",
        "message": (
            f"the foreign key '{{id=\"{MISSING_ID}\"}}' does not reference an existing 'services' entity."
        ),
        "fields": {"service": {"id": MISSING_ID}},
    }
    assert caught.value.field == "service" and caught.value.reference == "services"


async def test_foreign_key_violations_on_update_and_upsert(store: Store) -> None:
    consumer = await store.insert("consumers", entity("consumers", username="ann"))
    plugin = await store.insert("plugins", entity("plugins", name="my-custom-plugin", consumer=ref(consumer)))

    with pytest.raises(ForeignKeyViolation) as on_update:
        await store.update("plugins", plugin["id"], {**plugin, "service": {"id": MISSING_ID}})
    with pytest.raises(ForeignKeyViolation) as on_upsert:
        await store.upsert("plugins", {**plugin, "consumer": {"id": MISSING_ID}})

    assert on_update.value.fields == {"service": {"id": MISSING_ID}}
    assert on_upsert.value.fields == {"consumer": {"id": MISSING_ID}}
    assert await store.get("plugins", plugin["id"]) == plugin


# -- opening ------------------------------------------------------------------------------------------


async def test_connect_refuses_an_unbootstrapped_database_with_one_line(postgres_server: object) -> None:
    from harness.fixtures import PostgresServerInfo
    from zonegate.embedded.postgres import create_database, drop_database

    assert isinstance(postgres_server, PostgresServerInfo)
    dsn = create_database(postgres_server.dsn, "zg_store_not_bootstrapped")
    try:
        with pytest.raises(
            SchemaNotReady, match=r"^database needs bootstrapping; run 'zonegate migrations bootstrap'$"
        ):
            await Store.connect(dsn, timeout=5)
        # Without the check it opens, and the first write says the same.
        async with Store.connect(dsn, timeout=5, check_schema=False) as unchecked:
            with pytest.raises(SchemaNotReady):
                await unchecked.insert("consumers", entity("consumers", username="ann"))
    finally:
        drop_database(postgres_server.dsn, "zg_store_not_bootstrapped")


async def test_connect_to_nothing_is_store_unavailable() -> None:
    from zonegate.embedded.ports import free_port

    with pytest.raises(StoreUnavailable, match=r"cannot connect to PostgreSQL at 127\.0\.0\.1:\d+/zonegate"):
        await Store.connect(f"postgresql://zonegate@127.0.0.1:{free_port()}/zonegate", timeout=2)
