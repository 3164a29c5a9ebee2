"""Odd requests that once ended in a 500: each is a 400 or a plain success now.

Found while holding the Admin API to its OpenAPI document (``test_admin_openapi``): a JSON body
nested past Python's recursion limit, a form or query name like ``size[1][1]...[1]``, or a
declarative document nested some hundreds of levels ended in an unhandled ``RecursionError``
(and, with the console log renderer, in seconds of formatting its traceback); a form name with a
Unicode digit (``config[¹]``) in a ``ValueError``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import FormData

from zonegate.control_plane.admin_api.arguments import MAX_DEPTH, parse_name, too_deep

from . import admin_fixtures
from .admin_fixtures import Admin

admin = admin_fixtures.admin

CANNOT_PARSE_JSON = {"message": "Cannot parse JSON body"}
TOO_DEEP = "failed parsing declarative configuration: exceeded maximum nesting depth"


def nested(depth: int) -> Any:
    """A value ``depth`` levels deep: lists in lists."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_depth_is_measured_without_recursion() -> None:
    assert not too_deep("text") and not too_deep({}) and not too_deep(nested(MAX_DEPTH))
    assert too_deep(nested(MAX_DEPTH + 1))
    assert too_deep({"a": [1, {"b": nested(MAX_DEPTH - 1)}]})
    assert too_deep(nested(100_000))


def test_only_ascii_digits_index_arrays() -> None:
    # str.isdigit() is true for "¹" and "٣", which Kong's %d pattern does not match.
    assert parse_name("config[¹]", allow_maps=True) == ["config", "¹"]
    assert parse_name("config[٣]", allow_maps=True) == ["config", "٣"]
    assert parse_name("paths[3]", allow_maps=True) == ["paths", 3]


async def test_a_form_name_with_a_unicode_digit_is_a_map_key(admin: Admin) -> None:
    reply = await admin.post("/services", form=[("host", "a.example"), ("tags[¹]", "x")])

    # {"tags": {"¹": "x"}}: a map where a set belongs, which the schema refuses.
    assert reply.status == 400, reply.body
    assert reply.body["code"] == 2 and reply.body["fields"] == {"tags": "expected a set"}


def test_names_nested_too_deep_are_plain_keys() -> None:
    deep = "a" + "[1]" * (MAX_DEPTH + 1)

    assert parse_name(deep, allow_maps=True) == [deep]
    assert len(parse_name("a" + "[1]" * (MAX_DEPTH - 1), allow_maps=True)) == MAX_DEPTH


async def test_json_nested_past_the_parser_is_cannot_parse(admin: Admin) -> None:
    body = "[" * 100_000 + "]" * 100_000
    headers = {"Content-Type": "application/json"}

    for path in ("/services", "/config"):
        reply = await admin.post(path, data=body, headers=headers)
        assert (reply.status, reply.body) == (400, CANNOT_PARSE_JSON), path


async def test_json_nested_past_the_limit_is_cannot_parse(admin: Admin) -> None:
    def service(tags: Any) -> dict[str, Any]:
        return {"name": "billing", "host": "a.example", "tags": tags}

    # One level under the limit (the body is the first): parsed, then refused by the schema.
    within = await admin.post("/services", json=service(nested(MAX_DEPTH - 1)))
    past = await admin.post("/services", json=service(nested(MAX_DEPTH)))
    far_past = await admin.post("/services", json=service(nested(800)))

    assert within.status == 400 and within.body["code"] == 2
    assert (past.status, past.body) == (400, CANNOT_PARSE_JSON)
    assert (far_past.status, far_past.body) == (400, CANNOT_PARSE_JSON)


async def test_query_and_form_names_nested_too_deep_are_plain_keys(admin: Admin) -> None:
    listed = await admin.get("/services?size" + "[1]" * 800 + "=1")  # 7 kB once encoded
    name = "name" + "[1]" * 5000
    created = await admin.post("/services", data=f"{name}=x&host=a.example", headers=_FORM)

    assert (listed.status, listed.body) == (200, {"data": [], "next": None})
    assert created.status == 400
    assert created.body["code"] == 2 and created.body["fields"] == {name: "unknown field"}


_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize(
    ("media", "text"),
    [
        ("application/x-www-form-urlencoded", "config=" + '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"),
        ("application/yaml", "a: " + "[" * 900 + "]" * 900),
    ],
)
async def test_declarative_documents_nested_too_deep_are_invalid(admin: Admin, media: str, text: str) -> None:
    reply = await admin.post("/config", data=text, headers={"Content-Type": media})

    assert reply.status == 400
    assert reply.body["code"] == 14 and reply.body["fields"] == {"@entity": [TOO_DEEP]}


async def test_a_multipart_json_part_nested_too_deep_is_refused(admin: Admin) -> None:
    form = FormData()
    form.add_field("name", "cors")
    form.add_field("config", json.dumps({"a": nested(500)}), content_type="application/json")

    reply = await admin.post("/plugins", data=form)

    assert (reply.status, reply.body) == (
        400,
        {"message": f"Cannot parse multipart body: nested deeper than {MAX_DEPTH} levels"},
    )
