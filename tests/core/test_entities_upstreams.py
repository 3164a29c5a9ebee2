"""Upstreams (hash_on / hash_fallback conditionals, distinct fields, name) and targets.

Kong 3.x: ``kong/db/schema/entities/upstreams.lua``, ``targets.lua`` and the target
normalisation in ``kong/db/dao/targets.lua`` (port 8000 added when none is given).
"""

from __future__ import annotations

from typing import Any

import pytest

from .entity_helpers import UPSTREAM_ID, conditional, kong_body, validate, violation

NAME = "backend.internal"


def upstream(**fields: Any) -> dict[str, Any]:
    return {"name": NAME, **fields}


# -- hash_on / hash_fallback: the "required" conditionals -----------------------------------------


@pytest.mark.parametrize(
    ("fields", "if_field", "then_field"),
    [
        ({"hash_on": "header"}, "hash_on", "hash_on_header"),
        ({"hash_on": "ip", "hash_fallback": "header"}, "hash_fallback", "hash_fallback_header"),
        ({"hash_on": "cookie"}, "hash_on", "hash_on_cookie"),
        ({"hash_on": "ip", "hash_fallback": "cookie"}, "hash_fallback", "hash_on_cookie"),
        ({"hash_on": "query_arg"}, "hash_on", "hash_on_query_arg"),
        ({"hash_on": "ip", "hash_fallback": "query_arg"}, "hash_fallback", "hash_fallback_query_arg"),
        ({"hash_on": "uri_capture"}, "hash_on", "hash_on_uri_capture"),
        ({"hash_on": "ip", "hash_fallback": "uri_capture"}, "hash_fallback", "hash_fallback_uri_capture"),
    ],
)
def test_hash_input_field_is_required(fields: dict[str, str], if_field: str, then_field: str) -> None:
    body = violation("upstreams", upstream(**fields))
    assert body == kong_body(
        f"2 schema violations (failed conditional validation given value of field '{if_field}'; "
        f"{then_field}: required field missing)",
        {"@entity": [conditional(if_field)], then_field: "required field missing"},
    )


def test_hash_on_and_fallback_header_both_missing() -> None:
    body = violation("upstreams", upstream(hash_on="header", hash_fallback="header"))
    assert body == kong_body(
        "4 schema violations (failed conditional validation given value of field 'hash_on'; "
        "failed conditional validation given value of field 'hash_fallback'; "
        "hash_fallback_header: required field missing; hash_on_header: required field missing)",
        {
            "@entity": [conditional("hash_on"), conditional("hash_fallback")],
            "hash_fallback_header": "required field missing",
            "hash_on_header": "required field missing",
        },
    )


# -- hash_on / hash_fallback: which fallbacks are allowed -----------------------------------------


@pytest.mark.parametrize(
    ("fields", "allowed"),
    [
        ({"hash_on": "none", "hash_fallback": "ip"}, "none"),
        ({"hash_on": "cookie", "hash_on_cookie": "sid", "hash_fallback": "ip"}, "none"),
        (
            {"hash_on": "ip", "hash_fallback": "ip"},
            "none, consumer, header, cookie, path, query_arg, uri_capture",
        ),
        (
            {"hash_on": "consumer", "hash_fallback": "consumer"},
            "none, ip, header, cookie, path, query_arg, uri_capture",
        ),
        (
            {"hash_on": "path", "hash_fallback": "path"},
            "none, consumer, ip, header, cookie, query_arg, uri_capture",
        ),
    ],
)
def test_hash_fallback_restrictions(fields: dict[str, str], allowed: str) -> None:
    body = violation("upstreams", upstream(**fields))
    assert body == kong_body(
        "2 schema violations (failed conditional validation given value of field 'hash_on'; "
        f"hash_fallback: expected one of: {allowed})",
        {"@entity": [conditional("hash_on")], "hash_fallback": f"expected one of: {allowed}"},
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"hash_on": "ip", "hash_fallback": "consumer"},
        {"hash_on": "consumer", "hash_fallback": "header", "hash_fallback_header": "x-user"},
        {
            "hash_on": "header",
            "hash_on_header": "x-a",
            "hash_fallback": "header",
            "hash_fallback_header": "x-b",
        },
        {
            "hash_on": "query_arg",
            "hash_on_query_arg": "a",
            "hash_fallback": "query_arg",
            "hash_fallback_query_arg": "b",
        },
        {"hash_on": "uri_capture", "hash_on_uri_capture": "id", "hash_fallback": "ip"},
        {"hash_on": "cookie", "hash_on_cookie": "sid", "hash_on_cookie_path": "/app"},
    ],
)
def test_valid_hash_combinations(fields: dict[str, str]) -> None:
    result = validate("upstreams", upstream(algorithm="consistent-hashing", **fields))
    assert {k: result[k] for k in fields} == fields


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        (
            {
                "hash_on": "header",
                "hash_on_header": "x-a",
                "hash_fallback": "header",
                "hash_fallback_header": "x-a",
            },
            "'hash_on_header', 'hash_fallback_header'",
        ),
        (
            {
                "hash_on": "query_arg",
                "hash_on_query_arg": "q",
                "hash_fallback": "query_arg",
                "hash_fallback_query_arg": "q",
            },
            "'hash_on_query_arg', 'hash_fallback_query_arg'",
        ),
        (
            {
                "hash_on": "uri_capture",
                "hash_on_uri_capture": "id",
                "hash_fallback": "uri_capture",
                "hash_fallback_uri_capture": "id",
            },
            "'hash_on_uri_capture', 'hash_fallback_uri_capture'",
        ),
    ],
)
def test_hash_inputs_must_be_distinct(fields: dict[str, str], names: str) -> None:
    body = violation("upstreams", upstream(**fields))
    message = f"values of these fields must be distinct: {names}"
    assert body == kong_body(f"schema violation ({message})", {"@entity": [message]})


# -- other upstream fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("10.0.0.1", "no ip addresses allowed"),
        ("[::1]", "no ip addresses allowed"),
        ("backend:8080", "no port allowed"),
        ("bad name", "must be a valid hostname"),
    ],
)
def test_upstream_name_rules(name: str, reason: str) -> None:
    body = violation("upstreams", {"name": name})
    message = f"Invalid name ('{name}'); {reason}"
    assert body == kong_body(f"schema violation (name: {message})", {"name": message})


def test_upstream_name_is_required() -> None:
    body = violation("upstreams", {})
    assert body == kong_body(
        "schema violation (name: required field missing)", {"name": "required field missing"}
    )


def test_upstream_algorithm_one_of() -> None:
    body = violation("upstreams", upstream(algorithm="random"))
    message = "expected one of: consistent-hashing, least-connections, round-robin, latency"
    assert body == kong_body(f"schema violation (algorithm: {message})", {"algorithm": message})


@pytest.mark.parametrize("slots", [9, 65537])
def test_upstream_slots_range(slots: int) -> None:
    body = violation("upstreams", upstream(slots=slots))
    message = "value should be between 10 and 65536"
    assert body == kong_body(f"schema violation (slots: {message})", {"slots": message})


def test_nested_healthcheck_error_is_nested_in_fields() -> None:
    body = violation(
        "upstreams", upstream(healthchecks={"active": {"healthy": {"http_statuses": [200, 99]}}})
    )
    assert body["fields"] == {
        "healthchecks": {
            "active": {"healthy": {"http_statuses": [None, "value should be between 100 and 999"]}}
        }
    }
    assert body["message"].startswith("schema violation (healthchecks.active: ")


def test_healthcheck_threshold_range() -> None:
    body = violation("upstreams", upstream(healthchecks={"threshold": 101}))
    assert body == kong_body(
        "schema violation (healthchecks.threshold: value should be between 0 and 100)",
        {"healthchecks": {"threshold": "value should be between 0 and 100"}},
    )


# -- targets ---------------------------------------------------------------------------------------


def target(value: str, **fields: Any) -> dict[str, Any]:
    return {"target": value, "upstream": {"id": UPSTREAM_ID}, **fields}


@pytest.mark.parametrize("value", ["bad host", "host:99999", "a..b", "host:port"])
def test_bad_target(value: str) -> None:
    # targets.lua validate_target: the value is quoted in the message when it is valid UTF-8.
    body = violation("targets", target(value))
    message = f"Invalid target ('{value}'); not a valid hostname or ip address"
    assert body == kong_body(f"schema violation (target: {message})", {"target": message})


def test_target_hostname_case_is_kept() -> None:
    # utils.normalize_ip does not normalise names ("Note: a name will not be normalized!").
    assert validate("targets", target("Backend.Example.COM"))["target"] == "Backend.Example.COM:8000"


@pytest.mark.parametrize("weight", [-1, 65536])
def test_target_weight_range(weight: int) -> None:
    body = violation("targets", target("host", weight=weight))
    message = "value should be between 0 and 65535"
    assert body == kong_body(f"schema violation (weight: {message})", {"weight": message})


def test_target_weight_zero_is_allowed() -> None:
    assert validate("targets", target("host", weight=0))["weight"] == 0


def test_target_needs_an_upstream() -> None:
    body = violation("targets", {"target": "host"})
    assert body == kong_body(
        "schema violation (upstream: required field missing)", {"upstream": "required field missing"}
    )
