"""``GET /config`` and ``POST /config``: whole declarative configs through the Admin API."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml
from aiohttp import FormData

from zonegate.core import declarative
from zonegate.core.canonical import config_hash

from . import admin_fixtures
from .admin_fixtures import Admin

admin = admin_fixtures.admin

DOCUMENT: dict[str, Any] = {
    "_format_version": "3.0",
    "services": [
        {
            "name": "billing",
            "url": "http://billing.internal:8080",
            "routes": [{"name": "pay", "paths": ["/pay"]}],
            "plugins": [{"name": "rate-limiting", "config": {"minute": 5}}],
        }
    ],
    "consumers": [
        {
            "username": "ann",
            "keyauth_credentials": [{"key": "ann-key"}],
            "basicauth_credentials": [{"username": "ann-u", "password": "clear"}],
        }
    ],
    "upstreams": [{"name": "pool", "targets": [{"target": "10.0.0.1:80"}]}],
}


async def test_get_config_of_an_empty_store(admin: Admin) -> None:
    reply = await admin.get("/config")

    assert (reply.status, reply.body) == (200, {"config": '_format_version: "3.0"\n'})


async def test_post_config_replaces_everything_and_answers_the_flattened_entities(admin: Admin) -> None:
    await admin.created("/services", json={"name": "old", "host": "old.internal"})
    before = (await admin.get("/status")).body["config_version"]

    reply = await admin.post("/config", json=DOCUMENT)

    assert reply.status == 201
    assert sorted(reply.body) == [
        "basicauth_credentials",
        "consumers",
        "keyauth_credentials",
        "plugins",
        "routes",
        "services",
        "targets",
        "upstreams",
    ]
    (service,) = reply.body["services"].values()
    assert service["name"] == "billing" and reply.body["services"] == {service["id"]: service}
    listed = await admin.get("/services")
    assert [s["name"] for s in listed.body["data"]] == ["billing"]
    assert (await admin.get("/routes/pay/service")).body["id"] == service["id"]
    # One POST is one config version, however many entities it carries.
    assert (await admin.get("/status")).body["config_version"] == before + 1


async def test_clear_passwords_are_stored_as_digests(admin: Admin) -> None:
    reply = await admin.post("/config", json=DOCUMENT)

    (consumer,) = reply.body["consumers"].values()
    (credential,) = (await admin.get("/basic-auths")).body["data"]
    assert credential["password"] == hashlib.sha1(("clear" + consumer["id"]).encode()).hexdigest()
    assert "clear" not in (await admin.get("/config")).body["config"]


async def test_check_hash_answers_304_for_the_stored_config(admin: Admin) -> None:
    first = await admin.post("/config?check_hash=1", json=DOCUMENT)
    again = await admin.post("/config?check_hash=1", json=DOCUMENT)
    exported = (await admin.get("/config")).body["config"]
    # The export (digests instead of clear passwords) is the same config too.
    round_trip = await admin.post("/config?check_hash=1", form={"config": exported})
    changed = await admin.post(
        "/config?check_hash=1", json={**DOCUMENT, "upstreams": [{"name": "pool", "targets": []}]}
    )

    assert first.status == 201
    assert (again.status, again.text) == (304, "")
    assert (round_trip.status, round_trip.text) == (304, "")
    assert changed.status == 201
    assert (await admin.get("/upstreams/pool/targets")).body["data"] == []


async def test_status_hash_is_the_hash_of_the_exported_file(admin: Admin) -> None:
    await admin.post("/config", json=DOCUMENT)

    status = await admin.get("/status")
    exported = (await admin.get("/config")).body["config"]

    assert status.body["configuration_hash"] == config_hash(declarative.loads(exported)).config_hash
    assert status.body["database"] == {"reachable": True}


async def test_invalid_configs_write_nothing_and_locate_every_error(admin: Admin) -> None:
    await admin.post("/config", json=DOCUMENT)
    broken = {
        "_format_version": "3.0",
        "services": [{"name": "s", "host": "x.internal", "port": 70000, "routes": [{"paths": ["nope"]}]}],
    }

    reply = await admin.post("/config", json=broken)

    fields = {
        "services": [
            {
                "port": "value should be between 0 and 65535",
                "routes": [{"paths": ["should start with: / (fixed path) or ~/ (regex path)"]}],
            }
        ]
    }
    assert reply.status == 400
    assert reply.body == {
        "code": 14,
        "name": "invalid declarative configuration",
        "message": "declarative config is invalid: "
        '{"services":[{"port":"value should be between 0 and 65535",'
        '"routes":[{"paths":["should start with: / (fixed path) or ~/ (regex path)"]}]}]}',
        "fields": fields,
        "flattened_errors": [
            {"path": "services[0].port", "message": "value should be between 0 and 65535"},
            {
                "path": "services[0].routes[0].paths[0]",
                "message": "should start with: / (fixed path) or ~/ (regex path)",
            },
        ],
    }
    assert [s["name"] for s in (await admin.get("/services")).body["data"]] == ["billing"]


async def test_config_as_form_field_raw_yaml_or_nothing(admin: Admin) -> None:
    text = yaml.safe_dump(DOCUMENT)

    as_form = await admin.post("/config", form={"config": text})
    as_yaml = await admin.post("/config", data=text.encode(), headers={"Content-Type": "application/yaml"})
    as_json_field = await admin.post("/config", json={"config": text})
    upload = FormData()  # curl -F config=@kong.yml
    upload.add_field("config", text.encode(), filename="kong.yml", content_type="application/octet-stream")
    as_file = await admin.post("/config?check_hash=1", data=upload)
    nothing = await admin.post("/config")
    syntax = await admin.post("/config", form={"config": "services: [\n"})

    assert (as_form.status, as_yaml.status, as_json_field.status) == (201, 201, 201)
    assert as_file.status == 304
    assert (nothing.status, nothing.body) == (400, {"message": "expected a declarative configuration"})
    assert syntax.status == 400 and syntax.body["code"] == 14
    assert syntax.body["flattened_errors"][0]["message"].startswith(
        "failed parsing declarative configuration"
    )


async def test_status_hash_follows_every_kind_of_write(admin: Admin) -> None:
    # /status hashes by what each write changed (the revision log): after creates, patches,
    # upserts, cascading deletes and a whole replace, it is still the hash of the export.
    async def status_is_the_export_hash() -> None:
        status = await admin.get("/status")
        exported = (await admin.get("/config")).body["config"]
        assert status.body["configuration_hash"] == config_hash(declarative.loads(exported)).config_hash

    await admin.post("/config", json=DOCUMENT)
    await status_is_the_export_hash()
    writes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/services", {"name": "extra", "url": "http://extra.internal"}),
        ("POST", "/services/extra/routes", {"name": "x1", "paths": ["/x1"], "tags": ["t"]}),
        ("PATCH", "/routes/x1", {"paths": ["/x2"]}),
        ("PATCH", "/services/billing", {"retries": 9}),
        ("PUT", "/consumers/bob", {"custom_id": "b"}),
        ("POST", "/consumers/bob/key-auth", {"key": "bob-key"}),
        ("DELETE", "/consumers/ann", None),  # cascades to ann's credentials
        ("DELETE", "/services/extra/routes/x1", None),
        ("POST", "/upstreams/pool/targets", {"target": "10.0.0.2:80"}),
        ("DELETE", "/upstreams/pool", None),  # cascades to its targets
    ]
    for method, path, body in writes:
        reply = await admin.request(method, path, json=body)
        assert reply.status in (200, 201, 204), (method, path, reply.body)
        await status_is_the_export_hash()
    await admin.post("/config", json=DOCUMENT)
    await status_is_the_export_hash()
