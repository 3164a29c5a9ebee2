"""Request bodies as Kong decodes them: JSON, form-encoded and multipart, names nested, values typed."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import FormData
from hypothesis import given
from hypothesis import strategies as st

from zonegate.control_plane.admin_api.arguments import (
    APPEND,
    decode_pairs,
    infer_entity,
    infer_value,
    parse_name,
)
from zonegate.core.entities import BY_NAME

from . import admin_fixtures
from .admin_fixtures import Admin

admin = admin_fixtures.admin

SERVICES = BY_NAME["services"]
ROUTES = BY_NAME["routes"]
UPSTREAMS = BY_NAME["upstreams"]


# -- names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("name", ["name"]),
        ("service.id", ["service", "id"]),
        ("paths[]", ["paths", APPEND]),
        ("paths[2]", ["paths", 2]),
        ("headers[x-version]", ["headers", "x-version"]),
        ("config.limits[a.b]", ["config", "limits", "a.b"]),
        (
            "healthchecks.active.healthy.http_statuses[]",
            ["healthchecks", "active", "healthy", "http_statuses", APPEND],
        ),
        (".hidden", [".hidden"]),
        ("trailing.", ["trailing."]),
        ("open[", ["open["]),
        ("[5]", ["[5]"]),
    ],
)
def test_form_names_address_nested_paths(name: str, path: list[Any]) -> None:
    assert parse_name(name, allow_maps=True) == path


def test_map_keys_are_plain_names_outside_writes() -> None:
    assert parse_name("tags[x]", allow_maps=False) == ["tags[x]"]


def test_decoding_nests_appends_indexes_and_repeats() -> None:
    pairs = [
        ("name", "x"),
        ("service.id", "s-1"),
        ("paths[]", "/a"),
        ("paths[]", "/b"),
        ("hosts[2]", "two"),
        ("hosts[1]", "one"),
        ("methods", "GET"),
        ("methods", "POST"),
        ("headers[x-v]", "1"),
        ("sources[1].ip", "10.0.0.1"),
        ("sources[1].port", "80"),
    ]

    assert decode_pairs(pairs, allow_maps=True) == {
        "name": "x",
        "service": {"id": "s-1"},
        "paths": ["/a", "/b"],
        "hosts": ["one", "two"],
        "methods": ["GET", "POST"],
        "headers": {"x-v": "1"},
        "sources": [{"ip": "10.0.0.1", "port": "80"}],
    }


_WORDS = st.text(alphabet="abcdefghij", min_size=1, max_size=6)


@given(st.dictionaries(_WORDS, st.lists(st.text(max_size=8), min_size=1, max_size=4), max_size=5))
def test_array_pairs_decode_back_to_the_arrays(arrays: dict[str, list[str]]) -> None:
    pairs = [(f"{name}[]", value) for name, values in arrays.items() for value in values]
    assert decode_pairs(pairs, allow_maps=True) == arrays


# -- types --------------------------------------------------------------------------------------------


def test_values_take_the_kind_of_their_field() -> None:
    inferred = infer_entity(
        {
            "port": "8080",
            "retries": "",
            "enabled": "false",
            "tls_verify": "maybe",
            "connect_timeout": "soon",
            "tags": "one",
            "client_certificate": {"id": "c"},
            "url": "",
        },
        SERVICES,
    )

    assert inferred == {
        "port": 8080,
        "retries": None,
        "enabled": False,
        "tls_verify": "maybe",  # left for validation to refuse
        "connect_timeout": "soon",
        "tags": ["one"],
        "client_certificate": {"id": "c"},
        "url": "",  # not a field: Kong infers schema fields only
    }


def test_records_maps_and_free_form_configs() -> None:
    upstream = infer_entity(
        {"healthchecks": {"active": {"healthy": {"interval": "5", "http_statuses": ["200", "302"]}}}},
        UPSTREAMS,
    )
    route = infer_entity({"headers": {"x-v": "1"}, "regex_priority": "-3"}, ROUTES)
    config = infer_value(
        {"minute": "5", "on": "true", "name": "x", "blank": "", "list": ["1", "a"]},
        BY_NAME["plugins"].field("config"),
    )

    assert upstream == {"healthchecks": {"active": {"healthy": {"interval": 5, "http_statuses": [200, 302]}}}}
    assert route == {"headers": {"x-v": ["1"]}, "regex_priority": -3}
    assert config == {"minute": 5, "on": True, "name": "x", "blank": None, "list": [1, "a"]}


# -- through the API ------------------------------------------------------------------------------------


async def test_form_bodies_are_typed_like_json(admin: Admin) -> None:
    service = await admin.created(
        "/services",
        form=[
            ("name", "billing"),
            ("url", "http://a.internal:8080/x"),
            ("retries", "3"),
            ("tags[]", "a"),
            ("tags[]", "b"),
        ],
    )
    route = await admin.created(
        "/routes",
        form=[
            ("name", "pay"),
            ("service.id", service["id"]),
            ("paths", "/pay"),
            ("paths", "/v2/pay"),
            ("methods[]", "GET"),
            ("strip_path", "false"),
            ("headers[x-version]", "v1"),
            ("regex_priority", "7"),
        ],
    )

    assert (service["port"], service["path"], service["retries"], service["tags"]) == (
        8080,
        "/x",
        3,
        ["a", "b"],
    )
    assert route["service"] == {"id": service["id"]}
    assert route["paths"] == ["/pay", "/v2/pay"]
    assert (route["methods"], route["strip_path"], route["regex_priority"]) == (["GET"], False, 7)
    assert route["headers"] == {"x-version": ["v1"]}


async def test_a_form_value_that_is_no_number_fails_validation_not_the_server(admin: Admin) -> None:
    reply = await admin.post("/services", form={"host": "a.internal", "port": "eighty"})

    assert reply.status == 400
    assert reply.body["fields"] == {"port": "expected an integer"}


async def test_empty_form_values_are_null(admin: Admin) -> None:
    service = await admin.created("/services", form={"name": "billing", "host": "a.internal"})

    patched = await admin.patch("/services/billing", form={"tls_verify_depth": "", "name": ""})

    assert patched.status == 200
    assert patched.body["name"] is None and patched.body["id"] == service["id"]


async def test_multipart_bodies(admin: Admin) -> None:
    form = FormData()
    form.add_field("name", "billing")
    form.add_field("host", "a.internal")
    form.add_field("port", "81")
    form.add_field("tags[]", "x")
    form.add_field("tags[]", "y")

    service = await admin.created("/services", data=form)

    assert (service["name"], service["port"], service["tags"]) == ("billing", 81, ["x", "y"])


async def test_bodies_kong_refuses(admin: Admin) -> None:
    text = await admin.post("/services", data=b"host=a", headers={"Content-Type": "text/plain"})
    bad_json = await admin.post("/services", data=b'{"host": ', headers={"Content-Type": "application/json"})
    empty_json = await admin.post("/services", data=b"", headers={"Content-Type": "application/json"})
    array = await admin.post("/services", json=["a"])
    nothing = await admin.post("/services")

    assert (text.status, text.body) == (415, {"message": "Unsupported Media Type"})
    assert (bad_json.status, bad_json.body) == (400, {"message": "Cannot parse JSON body"})
    assert (empty_json.status, empty_json.body) == (400, {"message": "Cannot parse JSON body"})
    assert (array.status, array.body["fields"]) == (400, {"@entity": ["expected a record"]})
    # No body at all is an empty entity: the schema says what is missing.
    assert (nothing.status, nothing.body["fields"]) == (400, {"host": "required field missing"})


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status"),
    [
        ("POST", "/consumers", b'{"username": "a\\u0000b"}', "application/json", 400),
        ("POST", "/services", b'{"host": "a.internal", "tags": ["\\u0000"]}', "application/json", 400),
        ("POST", "/plugins", b'{"name": "cors", "config": {"x": 1e400}}', "application/json", 400),
        ("POST", "/services", b'{"host": "a.internal", "port": 1e400}', "application/json", 400),
        ("GET", "/consumers/a%00b", None, None, 404),
        ("PUT", "/consumers/a%00b", b"{}", "application/json", 400),
        ("GET", "/consumers?custom_id=%00", None, None, 200),
        ("GET", "/services?size=1e400", None, None, 400),
        ("POST", "/services", b"--zz\r\nbroken", "multipart/form-data; boundary=zz", 400),
        ("POST", "/services", b"x", "multipart/form-data", 400),
        ("POST", "/services", b"\xff=1", "application/x-www-form-urlencoded", 400),
        ("POST", "/routes", b"paths[1][2]=/a&paths[]=x&paths[k]=3", "application/x-www-form-urlencoded", 400),
        (
            "POST",
            "/config",
            b'{"_format_version": "3.0", "consumers": [{"username": "\\u0000"}]}',
            "application/json",
            400,
        ),
    ],
)
async def test_input_postgres_cannot_hold_or_nobody_can_parse_is_a_client_error(
    admin: Admin, method: str, path: str, body: bytes | None, content_type: str | None, status: int
) -> None:
    headers = {"Content-Type": content_type} if content_type else None

    reply = await admin.request(method, path, data=body, headers=headers)

    assert reply.status == status, reply.text
    assert reply.body is not None and reply.body != {"message": "An unexpected error occurred"}
