"""The node endpoints (``/``, ``/status``, ``/endpoints``), schemas, and the admin token."""

from __future__ import annotations

from pathlib import Path

from zonegate import __version__
from zonegate.control_plane.store import Store
from zonegate.plugins.bundled import BUNDLED

from . import admin_fixtures
from .admin_fixtures import NODE_ID, Admin, make_settings, serve

admin = admin_fixtures.admin

TOKEN = "t0ken-with-enough-entropy"


async def test_root_describes_the_node_without_secrets(store: Store, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, admin_token=TOKEN, pg_password="pg-secret", plugins="bundled,my-plugin"
    )
    async for served in serve(store, settings):
        served.headers = {"Zonegate-Admin-Token": TOKEN}
        reply = await served.get("/")

    body = reply.body
    assert reply.status == 200
    assert (body["tagline"], body["version"], body["hostname"], body["node_id"]) == (
        "Welcome to zonegate",
        __version__,
        "test-host",
        NODE_ID,
    )
    available = body["plugins"]["available_on_server"]
    assert sorted(available) == sorted([*BUNDLED, "my-plugin"])
    assert available["key-auth"] == {"version": __version__, "priority": 1250}
    assert body["plugins"]["enabled_in_cluster"] == []
    configuration = body["configuration"]
    assert configuration["role"] == "control_plane"
    assert configuration["admin_listen"] == ["127.0.0.1:8001", "127.0.0.1:8444 ssl"]
    assert (configuration["admin_token"], configuration["pg_password"], configuration["pg_dsn"]) == (
        "******",
        "******",
        "******",
    )
    assert TOKEN not in reply.text and "pg-secret" not in reply.text
    assert "lua_version" not in body


async def test_status_and_readiness(admin: Admin) -> None:
    empty = await admin.get("/status")
    await admin.created("/consumers", json={"username": "ann"})
    after = await admin.get("/status")
    ready = await admin.get("/status/ready")

    assert empty.body == {
        "database": {"reachable": True},
        "server": {"total_requests": 1},
        "configuration_hash": "0" * 32,
        "config_version": 0,
    }
    assert after.body["config_version"] == 1
    assert after.body["configuration_hash"] != "0" * 32
    assert (ready.status, ready.body) == (200, {"message": "ready"})


async def test_endpoints_lists_kong_style_paths(admin: Admin) -> None:
    reply = await admin.get("/endpoints")

    data = reply.body["data"]
    assert data == sorted(data, key=lambda p: p.replace("/", "\x00"))
    for path in (
        "/",
        "/config",
        "/consumers/{consumers}/key-auth/{keyauth_credentials}",
        "/routes/{routes}/service",
        "/services/{services}/routes/{routes}",
        "/upstreams/{upstreams}/targets/{targets}",
        "/schemas/{name}/validate",
    ):
        assert path in data, path
    assert not any(p.startswith("/targets") for p in data)


async def test_entity_schemas(admin: Admin) -> None:
    services = await admin.get("/schemas/services")
    routes = await admin.get("/schemas/routes")
    unknown = await admin.get("/schemas/nope")

    fields = {name: spec for field in services.body["fields"] for name, spec in field.items()}
    assert list(fields)[:4] == ["id", "created_at", "updated_at", "name"]
    assert fields["retries"]["default"] == 5 and fields["retries"]["between"] == [0, 32767]
    assert fields["protocol"]["one_of"][:2] == ["grpc", "grpcs"] and fields["protocol"]["required"] is True
    assert fields["id"] == {"type": "string", "auto": True, "uuid": True, "description": "A UUID."}
    route_fields = {name: spec for field in routes.body["fields"] for name, spec in field.items()}
    assert route_fields["service"]["type"] == "foreign" and route_fields["service"]["reference"] == "services"
    assert route_fields["protocols"]["default"] == ["http", "https"]
    assert (unknown.status, unknown.body) == (404, {"message": "No entity named 'nope'"})


async def test_schema_validation(admin: Admin) -> None:
    valid = await admin.post("/schemas/services/validate", json={"host": "a.internal"})
    invalid = await admin.post("/schemas/services/validate", form={"host": "a.internal", "port": "-1"})
    # Generated fields count as present, as on insert.
    key_auth = await admin.post(
        "/schemas/keyauth_credentials/validate", json={"consumer": {"id": admin_fixtures.MISSING_ID}}
    )
    plugin = await admin.post("/schemas/plugins/validate", json={"name": "cors"})
    bad_plugin = await admin.post("/schemas/plugins/validate", json={"name": "nope"})
    unknown = await admin.post("/schemas/nope/validate", json={})

    assert (valid.status, valid.body) == (200, {"message": "schema validation successful"})
    assert invalid.status == 400
    assert invalid.body == {
        "code": 2,
        "name": "schema violation",
        "message": "schema violation (port: value should be between 0 and 65535)",
        "fields": {"port": "value should be between 0 and 65535"},
    }
    assert key_auth.status == 200
    assert plugin.status == 200
    assert bad_plugin.status == 400 and "not enabled" in bad_plugin.body["fields"]["name"]
    assert (unknown.status, unknown.body) == (404, {"message": "No entity named 'nope'"})
    assert (await admin.get("/consumers")).body["data"] == []  # validation writes nothing


async def test_plugin_schemas_and_enabled_plugins(admin: Admin) -> None:
    schema = await admin.get("/schemas/plugins/key-auth")
    unknown = await admin.get("/schemas/plugins/nope")
    enabled = await admin.get("/plugins/enabled")

    fields = {name: spec for field in schema.body["fields"] for name, spec in field.items()}
    assert list(fields) == ["route", "service", "consumer", "config", "protocols"]
    assert fields["config"]["type"] == "record" and fields["config"]["fields"] == []
    assert (unknown.status, unknown.body) == (404, {"message": "No plugin named 'nope'"})
    assert enabled.body == {"enabled_plugins": list(BUNDLED)}


async def test_the_admin_token_guards_every_request(store: Store, tmp_path: Path) -> None:
    async for served in serve(store, make_settings(tmp_path, admin_token=TOKEN)):
        missing = await served.get("/services")
        wrong = await served.get("/", headers={"Zonegate-Admin-Token": TOKEN + "x"})
        unknown_path = await served.get("/nope")
        right = await served.get("/services", headers={"Zonegate-Admin-Token": TOKEN})
        created = await served.post(
            "/consumers", json={"username": "ann"}, headers={"Zonegate-Admin-Token": TOKEN}
        )
        refused_write = await served.post("/consumers", json={"username": "bob"})

    unauthorized = {"message": "Invalid or missing admin token"}
    assert (missing.status, missing.body) == (401, unauthorized)
    assert (wrong.status, wrong.body) == (401, unauthorized)
    assert (unknown_path.status, unknown_path.body) == (401, unauthorized)
    assert (right.status, created.status) == (200, 201)
    assert (refused_write.status, refused_write.body) == (401, unauthorized)
    assert [c["username"] for c in (await store.page("consumers"))[0]] == ["ann"]


async def test_without_a_token_setting_no_header_is_needed(admin: Admin) -> None:
    assert admin.settings.admin_token is None
    assert (await admin.get("/services")).status == 200


async def test_a_database_that_went_away_is_503_never_500(bootstrapped: str, tmp_path: Path) -> None:
    store = await Store.connect(bootstrapped, timeout=5)
    async for served in serve(store, make_settings(tmp_path)):
        assert (await served.get("/status")).body["database"] == {"reachable": True}
        await store.close()  # every later query fails as if PostgreSQL were gone

        listed = await served.get("/services")
        status = await served.get("/status")
        ready = await served.get("/status/ready")

    assert listed.status == 503
    assert listed.body["message"].startswith("cannot reach PostgreSQL")
    assert status.status == 200
    assert status.body["database"] == {"reachable": False}
    # The last known state stays visible.
    assert status.body["config_version"] is not None
    assert ready.status == 503 and ready.body["message"].startswith("database unreachable")
