"""Field-level errors every kind shares: unknown and missing fields, types, ranges, one_of,
tags, foreign keys and Kong's default ``len_min = 1`` on strings."""

from __future__ import annotations

from typing import Any

import pytest

from .entity_helpers import CONSUMER_ID, UPSTREAM_ID, kong_body, validate, violation

TAG_ERROR = "invalid tag '{}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences"


def test_unknown_field() -> None:
    body = violation("services", {"host": "example.com", "hostname": "example.com"})
    assert body == kong_body("schema violation (hostname: unknown field)", {"hostname": "unknown field"})


def test_unknown_fields_are_reported_with_the_others_sorted() -> None:
    body = violation("consumers", {"username": "u", "zeta": 1, "alpha": 2, "tags": "t"})
    assert body == kong_body(
        "3 schema violations (alpha: unknown field; tags: expected a set; zeta: unknown field)",
        {"alpha": "unknown field", "tags": "expected a set", "zeta": "unknown field"},
    )


def test_required_field_missing() -> None:
    body = violation("services", {"name": "svc"})
    assert body == kong_body(
        "schema violation (host: required field missing)", {"host": "required field missing"}
    )


def test_explicit_null_for_a_required_field_with_a_default() -> None:
    body = violation("services", {"host": "example.com", "port": None})
    assert body == kong_body(
        "schema violation (port: required field missing)", {"port": "required field missing"}
    )


def test_explicit_null_for_an_optional_field_is_fine() -> None:
    assert validate("services", {"host": "example.com", "path": None, "tags": None})["path"] is None


@pytest.mark.parametrize(
    ("kind", "data", "field", "message"),
    [
        ("services", {"host": 42}, "host", "expected a string"),
        ("services", {"host": "example.com", "port": "80"}, "port", "expected an integer"),
        ("services", {"host": "example.com", "port": True}, "port", "expected an integer"),
        ("services", {"host": "example.com", "retries": 1.5}, "retries", "expected an integer"),
        ("services", {"host": "example.com", "enabled": "yes"}, "enabled", "expected a boolean"),
        ("services", {"host": "example.com", "enabled": 1}, "enabled", "expected a boolean"),
        (
            "services",
            # https: with http, Kong's conditional (run_with_invalid_fields) would say "must be null".
            {"host": "example.com", "protocol": "https", "ca_certificates": "id"},
            "ca_certificates",
            "expected an array",
        ),
        ("routes", {"paths": "/"}, "paths", "expected an array"),
        ("routes", {"methods": "GET"}, "methods", "expected a set"),
        ("routes", {"headers": "x-a: 1"}, "headers", "expected a map"),
        ("upstreams", {"name": "u", "healthchecks": []}, "healthchecks", "expected a record"),
    ],
)
def test_wrong_types(kind: str, data: dict[str, Any], field: str, message: str) -> None:
    body = violation(kind, data)
    assert body == kong_body(f"schema violation ({field}: {message})", {field: message})


def test_wrong_type_in_a_nested_record() -> None:
    body = violation("upstreams", {"name": "u", "healthchecks": {"threshold": "high"}})
    assert body == kong_body(
        "schema violation (healthchecks.threshold: expected a number)",
        {"healthchecks": {"threshold": "expected a number"}},
    )


def test_integral_float_is_an_integer() -> None:
    result = validate("services", {"host": "example.com", "port": 8080.0, "retries": 3.0})
    assert (result["port"], result["retries"]) == (8080, 3)
    assert isinstance(result["port"], int)


@pytest.mark.parametrize("port", [-1, 65536, 10**6])
def test_out_of_range_port(port: int) -> None:
    body = violation("services", {"host": "example.com", "port": port})
    assert body == kong_body(
        "schema violation (port: value should be between 0 and 65535)",
        {"port": "value should be between 0 and 65535"},
    )


def test_one_of() -> None:
    body = violation("services", {"host": "example.com", "protocol": "ftp"})
    message = "expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp"
    assert body == kong_body(f"schema violation (protocol: {message})", {"protocol": message})


def test_bad_tags() -> None:
    body = violation("services", {"host": "example.com", "tags": ["a,b", "ok", "c/d"]})
    first, second = TAG_ERROR.format("a,b"), TAG_ERROR.format("c/d")
    assert body == kong_body(
        f"2 schema violations (tags.1: {first}; tags.3: {second})", {"tags": [first, None, second]}
    )


def test_null_tag_element() -> None:
    body = violation("consumers", {"username": "u", "tags": ["ok", None]})
    assert body == kong_body(
        "schema violation (tags.2: required field missing)", {"tags": [None, "required field missing"]}
    )


def test_tags_are_a_set() -> None:
    assert validate("consumers", {"username": "u", "tags": ["b", "a", "b", "a"]})["tags"] == ["b", "a"]


@pytest.mark.parametrize(
    ("kind", "data", "field"),
    [
        ("routes", {"paths": ["/"], "service": {"id": "not-a-uuid"}}, "service"),
        ("targets", {"target": "host", "upstream": {"id": "1234"}}, "upstream"),
        ("acls", {"group": "g", "consumer": {"id": "6f1b0b5e2a6c4a579f7e0d0b9c1e2a3b"}}, "consumer"),
    ],
)
def test_bad_uuid_in_a_foreign_key(kind: str, data: dict[str, Any], field: str) -> None:
    body = violation(kind, data)
    assert body == kong_body(
        f"schema violation ({field}.id: expected a valid UUID)", {field: {"id": "expected a valid UUID"}}
    )


def test_foreign_key_must_be_a_record() -> None:
    body = violation("acls", {"group": "g", "consumer": CONSUMER_ID})
    assert body == kong_body(
        "schema violation (consumer: expected a record)", {"consumer": "expected a record"}
    )


@pytest.mark.parametrize(
    ("kind", "data", "expected_fields"),
    [
        ("services", {"host": "example.com", "name": ""}, {"name": "length must be at least 1"}),
        ("services", {"host": "example.com", "tags": [""]}, {"tags": ["length must be at least 1"]}),
        ("routes", {"paths": [""]}, {"paths": ["length must be at least 1"]}),
        ("targets", {"target": "", "upstream": {"id": UPSTREAM_ID}}, {"target": "length must be at least 1"}),
        ("acls", {"group": "", "consumer": {"id": CONSUMER_ID}}, {"group": "length must be at least 1"}),
    ],
)
def test_empty_strings_are_refused(kind: str, data: dict[str, Any], expected_fields: dict[str, Any]) -> None:
    # Kong's validate_field sets len_min = 1 on every string field that does not declare one.
    assert violation(kind, data)["fields"] == expected_fields


def test_entity_must_be_a_mapping() -> None:
    body = violation("services", ["host", "example.com"])  # type: ignore[arg-type]
    assert body["fields"] == {"@entity": ["expected a record"]}
