"""The Admin API's entity endpoints against a real store: Kong's statuses, shapes and error bodies."""

from __future__ import annotations

import hashlib

from core import pki

from . import admin_fixtures
from .admin_fixtures import MISSING_ID, Admin

admin = admin_fixtures.admin

NOT_FOUND = {"message": "Not found"}


async def test_service_lifecycle_by_id_and_by_name(admin: Admin) -> None:
    created = await admin.created(
        "/services", json={"name": "billing", "url": "https://billing.internal:8443/v1"}
    )

    assert created == {
        "id": created["id"],
        "created_at": created["created_at"],
        "updated_at": created["updated_at"],
        "name": "billing",
        "retries": 5,
        "protocol": "https",
        "host": "billing.internal",
        "port": 8443,
        "path": "/v1",
        "connect_timeout": 60000,
        "write_timeout": 60000,
        "read_timeout": 60000,
        "tags": None,
        "client_certificate": None,
        "tls_verify": None,
        "tls_verify_depth": None,
        "ca_certificates": None,
        "enabled": True,
    }
    assert isinstance(created["created_at"], int)
    by_id = await admin.get(f"/services/{created['id']}")
    by_name = await admin.get("/services/billing")
    assert (by_id.status, by_id.body) == (200, created)
    assert (by_name.status, by_name.body) == (200, created)

    patched = await admin.patch("/services/billing", json={"retries": 2, "path": None})
    assert patched.status == 200
    assert patched.body == {**created, "retries": 2, "path": None, "updated_at": patched.body["updated_at"]}

    deleted = await admin.delete("/services/billing")
    assert (deleted.status, deleted.text) == (204, "")
    gone = await admin.get(f"/services/{created['id']}")
    assert (gone.status, gone.body) == (404, NOT_FOUND)
    # DELETE is idempotent in Kong: a missing entity is still 204.
    assert (await admin.delete("/services/billing")).status == 204
    assert (await admin.delete(f"/services/{MISSING_ID}")).status == 204


async def test_put_by_name_creates_then_replaces_keeping_id_and_the_url_name(admin: Admin) -> None:
    first = await admin.put("/services/billing", json={"host": "a.internal", "retries": 1, "tags": ["x"]})
    assert first.status == 200
    assert (first.body["name"], first.body["host"], first.body["retries"]) == ("billing", "a.internal", 1)

    second = await admin.put("/services/billing", json={"name": "ignored", "host": "b.internal"})

    assert second.status == 200
    assert second.body["id"] == first.body["id"]
    assert second.body["created_at"] == first.body["created_at"]
    # PUT replaces: what the body leaves out goes back to its default.
    assert (second.body["name"], second.body["host"], second.body["retries"], second.body["tags"]) == (
        "billing",
        "b.internal",
        5,
        None,
    )
    listed = await admin.get("/services")
    assert [s["id"] for s in listed.body["data"]] == [first.body["id"]]


async def test_put_by_id_creates_with_that_id(admin: Admin) -> None:
    reply = await admin.put(f"/consumers/{MISSING_ID.upper()}", json={"username": "ann"})

    assert reply.status == 200
    assert reply.body["id"] == MISSING_ID
    assert (await admin.get("/consumers/ann")).body["id"] == MISSING_ID


async def test_schema_violation_body(admin: Admin) -> None:
    reply = await admin.post("/services", json={"host": "x.internal", "port": 70000, "foo": 1})

    assert reply.status == 400
    assert reply.body == {
        "code": 2,
        "name": "schema violation",
        "message": "2 schema violations (foo: unknown field; port: value should be between 0 and 65535)",
        "fields": {"foo": "unknown field", "port": "value should be between 0 and 65535"},
    }


async def test_unique_and_primary_key_violations(admin: Admin) -> None:
    first = await admin.created("/services", json={"name": "billing", "host": "a.internal"})

    duplicate_name = await admin.post("/services", json={"name": "billing", "host": "b.internal"})
    duplicate_id = await admin.post("/services", json={"id": first["id"], "host": "b.internal"})

    assert duplicate_name.status == 409
    assert duplicate_name.body == {
        "code": 5,
        "name": "unique constraint violation",
        "message": "UNIQUE violation detected on '{name=\"billing\"}'",
        "fields": {"name": "billing"},
    }
    assert duplicate_id.status == 400
    assert duplicate_id.body == {
        "code": 3,
        "name": "primary key violation",
        "message": f"primary key violation on key '{{id=\"{first['id']}\"}}'",
        "fields": {"id": first["id"]},
    }


async def test_foreign_keys_by_id_by_name_and_unresolved(admin: Admin) -> None:
    service = await admin.created("/services", json={"name": "billing", "host": "a.internal"})

    missing = await admin.post("/routes", json={"paths": ["/a"], "service": {"id": MISSING_ID}})
    by_name = await admin.post("/routes", json={"paths": ["/b"], "service": {"name": "billing"}})
    unknown = await admin.post("/routes", json={"paths": ["/c"], "service": {"name": "nope"}})

    assert missing.status == 400
    assert missing.body == {
        "code": 4,
        "name": "foreign key violation",
        "message": f"the foreign key '{{id=\"{MISSING_ID}\"}}' "
        "does not reference an existing 'services' entity.",
        "fields": {"service": {"id": MISSING_ID}},
    }
    assert by_name.status == 201
    assert by_name.body["service"] == {"id": service["id"]}
    unresolved = "the foreign key cannot be resolved with '{name=\"nope\"}' for an existing 'services' entity"
    assert unknown.status == 400
    assert unknown.body == {
        "code": 13,
        "name": "foreign keys unresolved",
        "message": f"foreign key unresolved (service.name: {unresolved})",
        "fields": {"service": {"name": unresolved}},
    }


async def test_deleting_a_service_with_routes_is_refused_until_they_go(admin: Admin) -> None:
    await admin.created("/services", json={"name": "billing", "host": "a.internal"})
    route = await admin.created("/services/billing/routes", json={"paths": ["/b"]})

    refused = await admin.delete("/services/billing")

    assert refused.status == 400
    assert refused.body == {
        "code": 4,
        "name": "foreign key violation",
        "message": "an existing 'routes' entity references this 'services' entity",
        "fields": {"@referenced_by": "routes"},
    }
    assert (await admin.get("/services/billing")).status == 200
    assert (await admin.delete(f"/routes/{route['id']}")).status == 204
    assert (await admin.delete("/services/billing")).status == 204


async def test_deleting_a_consumer_cascades_to_credentials_and_plugins(admin: Admin) -> None:
    await admin.created("/consumers", json={"username": "ann"})
    await admin.created("/consumers/ann/key-auth", json={"key": "k-1"})
    await admin.created("/consumers/ann/acls", json={"group": "admins"})
    await admin.created("/consumers/ann/plugins", json={"name": "rate-limiting", "config": {"minute": 5}})

    assert (await admin.delete("/consumers/ann")).status == 204

    for path in ("/key-auths", "/acls", "/plugins"):
        listed = await admin.get(path)
        assert listed.body == {"data": [], "next": None}, path


async def test_a_non_uuid_key_where_no_name_can_stand_is_an_invalid_primary_key(admin: Admin) -> None:
    reply = await admin.get("/ca_certificates/not-a-uuid")

    assert reply.status == 400
    assert reply.body == {
        "code": 1,
        "name": "invalid primary key",
        "message": "invalid primary key: '{id=\"expected a valid UUID\"}'",
        "fields": {"id": "expected a valid UUID"},
    }


async def test_routing_errors_and_trailing_slashes(admin: Admin) -> None:
    await admin.created("/services", json={"name": "billing", "host": "a.internal"})

    unknown_path = await admin.get("/nope")
    wrong_method = await admin.delete("/services")
    no_targets = await admin.get("/targets")
    with_slash = await admin.get("/services/billing/")

    assert (unknown_path.status, unknown_path.body) == (404, NOT_FOUND)
    assert (wrong_method.status, wrong_method.body) == (405, {"message": "Method not allowed"})
    assert (no_targets.status, no_targets.body) == (404, NOT_FOUND)
    assert (with_slash.status, with_slash.body["name"]) == (200, "billing")


async def test_nested_children_belong_to_their_parent(admin: Admin) -> None:
    billing = await admin.created("/services", json={"name": "billing", "host": "a.internal"})
    other = await admin.created("/services", json={"name": "other", "host": "b.internal"})
    # POST under a parent sets the foreign key from the URL, whatever the body says.
    route = await admin.created(
        "/services/billing/routes", json={"name": "pay", "paths": ["/pay"], "service": {"id": other["id"]}}
    )
    await admin.created("/services/other/routes", json={"name": "elsewhere", "paths": ["/x"]})

    assert route["service"] == {"id": billing["id"]}
    listed = await admin.get("/services/billing/routes")
    assert [r["name"] for r in listed.body["data"]] == ["pay"]
    assert (await admin.get("/services/billing/routes/pay")).body["id"] == route["id"]
    assert (await admin.get("/services/other/routes/pay")).status == 404
    assert (await admin.get("/services/nope/routes")).status == 404
    assert (await admin.post("/services/nope/routes", json={"paths": ["/n"]})).status == 404

    patched = await admin.patch("/services/billing/routes/pay", json={"paths": ["/pay", "/v2/pay"]})
    assert (patched.status, patched.body["paths"]) == (200, ["/pay", "/v2/pay"])
    put = await admin.put("/services/billing/routes/refund", json={"paths": ["/refund"]})
    assert (put.status, put.body["service"], put.body["name"]) == (200, {"id": billing["id"]}, "refund")

    assert (await admin.delete("/services/other/routes/pay")).status == 404
    assert (await admin.delete("/services/billing/routes/pay")).status == 204
    assert (await admin.delete("/services/billing/routes/pay")).status == 404


async def test_the_entity_behind_a_foreign_key(admin: Admin) -> None:
    service = await admin.created("/services", json={"name": "billing", "host": "a.internal"})
    await admin.created("/routes", json={"name": "pay", "paths": ["/pay"], "service": {"id": service["id"]}})
    await admin.created("/routes", json={"name": "loose", "paths": ["/loose"]})

    got = await admin.get("/routes/pay/service")
    patched = await admin.patch("/routes/pay/service", json={"retries": 1})
    deleted = await admin.delete("/routes/pay/service")
    missing = await admin.get("/routes/loose/service")
    created = await admin.put("/routes/loose/service", json={"host": "new.internal"})

    assert (got.status, got.body) == (200, service)
    assert (patched.status, patched.body["retries"]) == (200, 1)
    assert (deleted.status, deleted.body) == (405, {"message": "Method not allowed"})
    assert (missing.status, missing.body) == (404, NOT_FOUND)
    assert created.status == 200
    assert (await admin.get("/routes/loose")).body["service"] == {"id": created.body["id"]}
    assert (await admin.get("/routes/loose/service")).body["host"] == "new.internal"


async def test_plugins_must_be_enabled_and_patch_merges_config(admin: Admin) -> None:
    await admin.created("/services", json={"name": "billing", "host": "a.internal"})

    unknown = await admin.post("/plugins", json={"name": "no-such-plugin"})
    plugin = await admin.created(
        "/services/billing/plugins",
        json={"name": "rate-limiting", "config": {"minute": 5, "hour": 100}},
    )
    patched = await admin.patch(f"/plugins/{plugin['id']}", json={"config": {"hour": 200}})

    message = "plugin 'no-such-plugin' not enabled; add it to the 'plugins' configuration property"
    assert unknown.status == 400
    assert unknown.body == {
        "code": 2,
        "name": "schema violation",
        "message": f"schema violation (name: {message})",
        "fields": {"name": message},
    }
    assert plugin["service"] is not None and plugin["protocols"] == ["grpc", "grpcs", "http", "https"]
    config = patched.body["config"]
    assert (config["minute"], config["hour"], config["policy"]) == (5, 200, "local")  # merged, defaults kept
    assert (await admin.get("/services/billing/plugins")).body["data"] == [patched.body]
    assert (await admin.get(f"/plugins/{plugin['id']}/service")).body["name"] == "billing"
    root = await admin.get("/")
    assert root.body["plugins"]["enabled_in_cluster"] == ["rate-limiting"]


async def test_targets_live_under_their_upstream_by_id_or_host_port(admin: Admin) -> None:
    await admin.created("/upstreams", json={"name": "pool"})

    target = await admin.created("/upstreams/pool/targets", json={"target": "10.0.0.1"})
    duplicate = await admin.post("/upstreams/pool/targets", json={"target": "10.0.0.1:8000"})
    put = await admin.put("/upstreams/pool/targets/10.0.0.2:80", json={"weight": 5})

    assert (target["target"], target["weight"]) == ("10.0.0.1:8000", 100)
    assert duplicate.status == 409
    for key in (target["id"], "10.0.0.1:8000", "10.0.0.1"):
        assert (await admin.get(f"/upstreams/pool/targets/{key}")).body == target, key
    assert (put.status, put.body["target"], put.body["weight"]) == (200, "10.0.0.2:80", 5)
    listed = await admin.get("/upstreams/pool/targets")
    everything = await admin.get("/upstreams/pool/targets/all")
    assert sorted(t["target"] for t in listed.body["data"]) == ["10.0.0.1:8000", "10.0.0.2:80"]
    assert everything.body == listed.body
    assert (await admin.delete("/upstreams/pool/targets/10.0.0.1")).status == 204
    assert (await admin.get("/upstreams/pool/targets/10.0.0.1")).status == 404


async def test_key_auth_and_jwt_generate_their_keys(admin: Admin) -> None:
    ann = await admin.created("/consumers", json={"username": "ann"})
    await admin.created("/consumers", json={"username": "bob"})

    generated = await admin.created("/consumers/ann/key-auth")  # no body at all
    given = await admin.created("/consumers/ann/key-auth", json={"key": "my-key"})
    jwt = await admin.created("/consumers/ann/jwt", json={})

    assert isinstance(generated["key"], str) and len(generated["key"]) == 32
    assert generated["consumer"] == {"id": ann["id"]}
    assert (await admin.get("/consumers/ann/key-auth/my-key")).body == given
    assert (await admin.get("/consumers/bob/key-auth/my-key")).status == 404
    assert (await admin.get("/key-auths/my-key/consumer")).body == ann
    assert (await admin.patch("/key-auths/my-key/consumer", json={"username": "x"})).status == 405
    assert len((await admin.get("/key-auths")).body["data"]) == 2
    assert len(jwt["key"]) == 32 and len(jwt["secret"]) == 32 and jwt["algorithm"] == "HS256"


async def test_basic_auth_stores_kong_digests_only(admin: Admin) -> None:
    ann = await admin.created("/consumers", json={"username": "ann"})

    created = await admin.created(
        "/consumers/ann/basic-auth", json={"username": "ann-u", "password": "s3cret"}
    )
    resent = await admin.patch("/consumers/ann/basic-auth/ann-u", json={"password": created["password"]})
    changed = await admin.patch("/basic-auths/ann-u", json={"password": "n3w"})

    def digest(password: str) -> str:
        return hashlib.sha1((password + ann["id"]).encode()).hexdigest()

    assert created["password"] == digest("s3cret")
    # Re-sending the digest a GET returned must not hash it again (Kong's rule).
    assert resent.body["password"] == digest("s3cret")
    assert changed.body["password"] == digest("n3w")
    assert "s3cret" not in (await admin.get("/basic-auths")).text


async def test_acls_are_found_by_group_under_their_consumer(admin: Admin) -> None:
    await admin.created("/consumers", json={"username": "ann"})
    acl = await admin.created("/consumers/ann/acls", form=[("group", "admins")])

    duplicate = await admin.post("/consumers/ann/acls", json={"group": "admins"})
    by_group = await admin.get("/consumers/ann/acls/admins")
    put = await admin.put("/consumers/ann/acls/ops", json={"tags": ["t"]})

    assert duplicate.status == 409
    assert by_group.body == acl
    assert (put.status, put.body["group"], put.body["tags"]) == (200, "ops", ["t"])
    assert (await admin.delete("/consumers/ann/acls/admins")).status == 204
    assert [a["group"] for a in (await admin.get("/consumers/ann/acls")).body["data"]] == ["ops"]


async def test_consumers_by_custom_id(admin: Admin) -> None:
    ann = await admin.created("/consumers", json={"username": "ann", "custom_id": "c-1"})

    found = await admin.get("/consumers?custom_id=c-1")
    none = await admin.get("/consumers?custom_id=c-2")

    assert found.body == {"data": [ann], "next": None}
    assert none.body == {"data": [], "next": None}


async def test_certificates_carry_their_sni_names(admin: Admin) -> None:
    one, two = pki.ec_leaf("one.example.test"), pki.ec_leaf("two.example.test")

    cert = await admin.created(
        "/certificates", json={"cert": one.cert, "key": one.key, "snis": ["b.example.test", "a.example.test"]}
    )
    taken = await admin.post(
        "/certificates", json={"cert": two.cert, "key": two.key, "snis": ["a.example.test"]}
    )
    by_sni = await admin.get("/certificates/b.example.test")
    snis = await admin.get(f"/certificates/{cert['id']}/snis")
    patched = await admin.patch("/certificates/a.example.test", json={"snis": ["c.example.test"]})
    put_new = await admin.put("/certificates/new.example.test", json={"cert": two.cert, "key": two.key})
    unknown = await admin.get("/certificates/unknown.example.test")

    assert cert["snis"] == ["a.example.test", "b.example.test"]
    assert taken.status == 400
    owner = f"already associated with existing certificate '{cert['id']}'"
    assert taken.body["fields"] == {"snis": f"a.example.test {owner}"}
    assert by_sni.body == cert
    assert sorted(s["name"] for s in snis.body["data"]) == ["a.example.test", "b.example.test"]
    assert patched.body["snis"] == ["c.example.test"]
    assert (await admin.get("/snis/a.example.test")).status == 404
    assert (put_new.status, put_new.body["snis"]) == (200, ["new.example.test"])
    assert (unknown.status, unknown.body) == (404, {"message": "SNI not found"})
    assert (await admin.delete(f"/certificates/{cert['id']}")).status == 204
    assert [s["name"] for s in (await admin.get("/snis")).body["data"]] == ["new.example.test"]
