"""Deleting a referenced entity: what cascades and what is refused, for every foreign key, as in Kong."""

from __future__ import annotations

import itertools
from functools import cache
from typing import Any

import pytest

from core import pki
from zonegate.control_plane.errors import ForeignKeyViolation, ReferencedByOthers
from zonegate.control_plane.store import Store
from zonegate.control_plane.tables import TABLES

from .conftest import entity, ref

# Kong's behaviour, stated here rather than derived from the schemas so that a schema change that
# alters it fails this test. SNIs go with their certificate because Kong's certificates DAO deletes
# them, although the snis schema itself does not say cascade.
EXPECTED: dict[tuple[str, str], str] = {
    ("snis", "certificate"): "cascade",
    ("services", "client_certificate"): "restrict",
    ("routes", "service"): "restrict",
    ("upstreams", "client_certificate"): "restrict",
    ("targets", "upstream"): "cascade",
    ("plugins", "route"): "cascade",
    ("plugins", "service"): "cascade",
    ("plugins", "consumer"): "cascade",
    ("keyauth_credentials", "consumer"): "cascade",
    ("basicauth_credentials", "consumer"): "cascade",
    ("jwt_secrets", "consumer"): "cascade",
    ("acls", "consumer"): "cascade",
}

_counter = itertools.count()


@cache
def _leaf() -> pki.Pem:
    return pki.ec_leaf()


def build(kind: str, **refs: Any) -> dict[str, Any]:
    """A minimal valid entity of ``kind`` with the given foreign keys."""
    n = next(_counter)
    minimal: dict[str, dict[str, Any]] = {
        "certificates": {"cert": _leaf().cert, "key": _leaf().key},
        "snis": {"name": f"sni{n}.example.test"},
        "ca_certificates": {"cert": pki.ca_cert(f"CA {n}").cert},
        "services": {
            "host": "backend.internal",
            "protocol": "https" if "client_certificate" in refs else "http",
        },
        "routes": {"paths": [f"/r{n}"]},
        "consumers": {"username": f"user{n}"},
        "upstreams": {"name": f"up{n}.internal"},
        "targets": {"target": f"10.0.0.{n % 250}:80"},
        "plugins": {"name": f"plugin-{n}"},
        "keyauth_credentials": {"key": f"key-{n}"},
        "basicauth_credentials": {"username": f"basic{n}", "password": "secret"},
        "jwt_secrets": {"key": f"iss-{n}", "secret": "s"},
        "acls": {"group": f"group{n}"},
    }
    return entity(kind, **minimal[kind], **refs)


async def create(store: Store, kind: str, **refs: Any) -> dict[str, Any]:
    """Create a ``kind`` entity, and first the parents its required foreign keys need."""
    for name, fk in ((fk.field, fk) for fk in TABLES[kind].foreign):
        if fk.required and name not in refs:
            refs[name] = ref(await create(store, fk.reference))
    return await store.insert(kind, build(kind, **refs))


def test_every_foreign_key_has_an_expectation() -> None:
    assert set(EXPECTED) == {(t.kind, fk.field) for t in TABLES.values() for fk in t.foreign}


@pytest.mark.parametrize(("child_kind", "field"), sorted(EXPECTED))
async def test_deleting_a_referenced_parent(store: Store, child_kind: str, field: str) -> None:
    parent_kind = TABLES[child_kind].foreign_column(field).reference
    parent = await create(store, parent_kind)
    child = await create(store, child_kind, **{field: ref(parent)})
    version = await store.config_version()

    if EXPECTED[(child_kind, field)] == "restrict":
        with pytest.raises(ForeignKeyViolation) as caught:
            await store.delete(parent_kind, parent["id"])
        assert caught.value.body() == {
            "code": 4,
            "name": "foreign key violation",
            "message": f"an existing '{child_kind}' entity references this '{parent_kind}' entity",
            "fields": {"@referenced_by": child_kind},
        }
        assert await store.get(parent_kind, parent["id"]) == parent
        assert await store.get(child_kind, child["id"]) == child
        assert await store.config_version() == version
    else:
        assert await store.delete(parent_kind, parent["id"]) == parent
        assert await store.get(child_kind, child["id"]) is None
        (revision,) = await store.revisions(after=version)
        assert revision.op == "delete" and revision.entity_id == parent["id"]
        assert revision.detail == {"cascaded": {child_kind: [child["id"]]}}


async def test_deleting_a_consumer_takes_every_credential_and_plugin(store: Store) -> None:
    consumer = await create(store, "consumers")
    children = [
        await create(store, kind, consumer=ref(consumer))
        for kind in ("keyauth_credentials", "basicauth_credentials", "jwt_secrets", "acls", "plugins")
    ]
    bystander = await create(store, "keyauth_credentials")

    await store.delete("consumers", consumer["id"])

    for kind, child in zip(
        ("keyauth_credentials", "basicauth_credentials", "jwt_secrets", "acls", "plugins"),
        children,
        strict=True,
    ):
        assert await store.get(kind, child["id"]) is None
    assert await store.get("keyauth_credentials", bystander["id"]) == bystander


async def test_deleting_a_service_without_routes_takes_its_plugins(store: Store) -> None:
    service = await create(store, "services")
    plugin = await create(store, "plugins", service=ref(service))
    route = await create(store, "routes", service=ref(service))

    with pytest.raises(ForeignKeyViolation):
        await store.delete("services", service["id"])
    await store.delete("routes", route["id"])
    await store.delete("services", service["id"])

    assert await store.get("plugins", plugin["id"]) is None


async def test_a_ca_certificate_listed_by_a_service_cannot_be_deleted(store: Store) -> None:
    ca = await create(store, "ca_certificates")
    service = await store.insert(
        "services", entity("services", host="h.internal", protocol="https", ca_certificates=[ca["id"]])
    )

    with pytest.raises(ReferencedByOthers) as caught:
        await store.delete("ca_certificates", ca["id"])

    assert caught.value.body() == {
        "code": 19,
        "name": "referenced by others",
        "message": f"ca certificate {ca['id']} is still referenced by services (id = {service['id']})",
    }
    await store.delete("services", service["id"])
    assert await store.delete("ca_certificates", ca["id"]) == ca
