"""Consumers, their credentials (key-auth, basic-auth, jwt, acl) and plugins."""

from __future__ import annotations

from functools import cache

import pytest

from . import pki
from .entity_helpers import CONSUMER_ID, SERVICE_ID, conditional, kong_body, validate, violation

AT_LEAST_ONE = "at least one of these fields must be non-empty: 'custom_id', 'username'"


@cache
def rsa_public_key() -> str:
    return pki.public_key_pem(pki.rsa_key())


# -- consumers ----------------------------------------------------------------------------------


def test_consumer_needs_username_or_custom_id() -> None:
    body = violation("consumers", {"tags": ["x"]})
    assert body == kong_body(f"schema violation ({AT_LEAST_ONE})", {"@entity": [AT_LEAST_ONE]})


def test_consumer_with_custom_id_only() -> None:
    result = validate("consumers", {"custom_id": "ext-42"})
    assert (result["username"], result["custom_id"]) == (None, "ext-42")


def test_consumer_empty_username() -> None:
    # Kong strings have len_min = 1 by default, and at_least_one_of runs with invalid fields.
    body = violation("consumers", {"username": ""})
    assert body == kong_body(
        f"2 schema violations ({AT_LEAST_ONE}; username: length must be at least 1)",
        {"@entity": [AT_LEAST_ONE], "username": "length must be at least 1"},
    )


# -- credentials --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("keyauth_credentials", {}),
        ("basicauth_credentials", {"username": "u", "password": "p"}),
        ("jwt_secrets", {}),
        ("acls", {"group": "g"}),
    ],
)
def test_credentials_need_a_consumer(kind: str, data: dict[str, str]) -> None:
    body = violation(kind, data)
    assert body == kong_body(
        "schema violation (consumer: required field missing)", {"consumer": "required field missing"}
    )


def test_basicauth_needs_username_and_password() -> None:
    body = violation("basicauth_credentials", {"consumer": {"id": CONSUMER_ID}})
    assert body == kong_body(
        "2 schema violations (password: required field missing; username: required field missing)",
        {"password": "required field missing", "username": "required field missing"},
    )


def test_basicauth_empty_password() -> None:
    body = violation(
        "basicauth_credentials", {"consumer": {"id": CONSUMER_ID}, "username": "u", "password": ""}
    )
    assert body == kong_body(
        "schema violation (password: length must be at least 1)", {"password": "length must be at least 1"}
    )


def test_acl_needs_a_group() -> None:
    body = violation("acls", {"consumer": {"id": CONSUMER_ID}})
    assert body == kong_body(
        "schema violation (group: required field missing)", {"group": "required field missing"}
    )


def test_keyauth_ttl_range() -> None:
    body = violation("keyauth_credentials", {"consumer": {"id": CONSUMER_ID}, "ttl": -1})
    message = "value should be between 0 and 100000000"
    assert body == kong_body(f"schema violation (ttl: {message})", {"ttl": message})


@pytest.mark.parametrize("algorithm", ["RS256", "RS384", "RS512"])
def test_asymmetric_jwt_needs_a_public_key(algorithm: str) -> None:
    body = violation("jwt_secrets", {"consumer": {"id": CONSUMER_ID}, "algorithm": algorithm})
    assert body == kong_body(
        "2 schema violations (failed conditional validation given value of field 'algorithm'; "
        "rsa_public_key: required field missing)",
        {"@entity": [conditional("algorithm")], "rsa_public_key": "required field missing"},
    )


def test_rs256_with_a_public_key() -> None:
    key = rsa_public_key()
    result = validate(
        "jwt_secrets", {"consumer": {"id": CONSUMER_ID}, "algorithm": "RS256", "rsa_public_key": key}
    )
    assert (result["algorithm"], result["rsa_public_key"]) == ("RS256", key)


def test_rs256_with_a_bad_public_key() -> None:
    # Kong checks the key inside the conditional (then_match custom_validator = validate_ssl_key).
    data = {"consumer": {"id": CONSUMER_ID}, "algorithm": "RS256", "rsa_public_key": "not a key"}
    body = violation("jwt_secrets", data)
    assert body == kong_body(
        "2 schema violations (failed conditional validation given value of field 'algorithm'; "
        "rsa_public_key: invalid key)",
        {"@entity": [conditional("algorithm")], "rsa_public_key": "invalid key"},
    )


def test_hs256_ignores_rsa_public_key_content() -> None:
    # rsa_public_key is a plain string field in Kong; it is only checked for asymmetric algorithms.
    data = {"consumer": {"id": CONSUMER_ID}, "algorithm": "HS256", "rsa_public_key": "unused"}
    assert validate("jwt_secrets", data)["rsa_public_key"] == "unused"


def test_jwt_algorithm_one_of() -> None:
    body = violation("jwt_secrets", {"consumer": {"id": CONSUMER_ID}, "algorithm": "none"})
    message = (
        "expected one of: HS256, HS384, HS512, RS256, RS384, RS512, "
        "ES256, ES384, ES512, PS256, PS384, PS512, EdDSA"
    )
    assert body == kong_body(f"schema violation (algorithm: {message})", {"algorithm": message})


# -- plugins ------------------------------------------------------------------------------------


def test_plugin_needs_a_name() -> None:
    body = violation("plugins", {})
    assert body == kong_body(
        "schema violation (name: required field missing)", {"name": "required field missing"}
    )


def test_plugin_scopes_are_kept() -> None:
    data = {
        "name": "rate-limiting",
        "service": {"id": SERVICE_ID},
        "consumer": {"id": CONSUMER_ID},
        "config": {"minute": 5},
    }
    result = validate("plugins", data)
    assert (result["service"], result["consumer"], result["route"]) == (
        {"id": SERVICE_ID},
        {"id": CONSUMER_ID},
        None,
    )


def test_plugin_protocols_one_of() -> None:
    body = violation("plugins", {"name": "cors", "protocols": ["http", "smtp"]})
    message = "expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp"
    assert body == kong_body(f"schema violation (protocols.2: {message})", {"protocols": [None, message]})


def test_plugin_config_must_be_a_record() -> None:
    body = violation("plugins", {"name": "cors", "config": "origins=*"})
    assert body == kong_body("schema violation (config: expected a record)", {"config": "expected a record"})
