"""Every entity kind validated from a minimal input: the whole result, with Kong's defaults.

Each expected dict is written out in full, so a missing field, a stray field or a wrong
default all fail. Expected values come from Kong 3.x (``kong/db/schema/entities/*.lua``).
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from . import pki
from .entity_helpers import CERTIFICATE_ID, CONSUMER_ID, UPSTREAM_ID, validate


@cache
def ec_pair() -> pki.Pem:
    return pki.ec_leaf()


@cache
def rsa_pair() -> pki.Pem:
    return pki.rsa_leaf()


@cache
def ca() -> pki.Pem:
    return pki.ca_cert()


def sha256_hex(pem: str) -> str:
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()


SERVICE_DEFAULTS: dict[str, Any] = {
    "id": None,
    "created_at": None,
    "updated_at": None,
    "name": None,
    "retries": 5,
    "protocol": "http",
    "host": "example.com",
    "port": 80,
    "path": None,
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

ROUTE_DEFAULTS: dict[str, Any] = {
    "id": None,
    "created_at": None,
    "updated_at": None,
    "name": None,
    "protocols": ["http", "https"],
    "methods": None,
    "hosts": None,
    "paths": ["/"],
    "headers": None,
    "https_redirect_status_code": 426,
    "regex_priority": 0,
    "strip_path": True,
    "path_handling": "v0",
    "preserve_host": False,
    "request_buffering": True,
    "response_buffering": True,
    "snis": None,
    "sources": None,
    "destinations": None,
    "tags": None,
    "service": None,
}

HEALTHCHECKS_DEFAULTS: dict[str, Any] = {
    "active": {
        "type": "http",
        "timeout": 1,
        "concurrency": 10,
        "http_path": "/",
        "https_sni": None,
        "https_verify_certificate": True,
        "headers": None,
        "healthy": {"interval": 0, "http_statuses": [200, 302], "successes": 0},
        "unhealthy": {
            "interval": 0,
            "http_statuses": [429, 404, 500, 501, 502, 503, 504, 505],
            "tcp_failures": 0,
            "timeouts": 0,
            "http_failures": 0,
        },
    },
    "passive": {
        "type": "http",
        "healthy": {
            "http_statuses": [*range(200, 209), 226, *range(300, 309)],
            "successes": 0,
        },
        "unhealthy": {"http_statuses": [429, 500, 503], "tcp_failures": 0, "timeouts": 0, "http_failures": 0},
    },
    "threshold": 0,
}

UPSTREAM_DEFAULTS: dict[str, Any] = {
    "id": None,
    "created_at": None,
    "updated_at": None,
    "name": "backend.internal",
    "algorithm": "round-robin",
    "hash_on": "none",
    "hash_fallback": "none",
    "hash_on_header": None,
    "hash_fallback_header": None,
    "hash_on_cookie": None,
    "hash_on_cookie_path": "/",
    "hash_on_query_arg": None,
    "hash_fallback_query_arg": None,
    "hash_on_uri_capture": None,
    "hash_fallback_uri_capture": None,
    "slots": 10000,
    "healthchecks": HEALTHCHECKS_DEFAULTS,
    "tags": None,
    "host_header": None,
    "client_certificate": None,
    "use_srv_name": False,
}


# -- services ----------------------------------------------------------------------------------


def test_service_defaults() -> None:
    assert validate("services", {"host": "example.com"}) == SERVICE_DEFAULTS


@pytest.mark.parametrize(
    ("url", "protocol", "port", "path"),
    [
        ("http://example.com", "http", 80, None),
        ("https://example.com:8443/api/v1", "https", 8443, "/api/v1"),
        ("https://example.com", "https", 443, None),
        ("http://example.com:8080/", "http", 8080, "/"),
    ],
)
def test_service_url_shorthand(url: str, protocol: str, port: int, path: str | None) -> None:
    expected = {**SERVICE_DEFAULTS, "protocol": protocol, "host": "example.com", "port": port, "path": path}
    assert validate("services", {"url": url}) == expected


def test_service_url_shorthand_does_not_touch_the_input() -> None:
    data = {"url": "https://example.com:8443/api", "name": "svc"}
    before = copy.deepcopy(data)
    validate("services", data)
    assert data == before


# -- routes ------------------------------------------------------------------------------------


def test_route_defaults() -> None:
    assert validate("routes", {"paths": ["/"]}) == ROUTE_DEFAULTS


@pytest.mark.parametrize("protocol", ["grpc", "grpcs"])
def test_grpc_route_defaults_strip_path_to_false(protocol: str) -> None:
    expected = {**ROUTE_DEFAULTS, "protocols": [protocol], "strip_path": False}
    assert validate("routes", {"protocols": [protocol], "paths": ["/"]}) == expected


# -- consumers and credentials -----------------------------------------------------------------


def test_consumer_defaults() -> None:
    assert validate("consumers", {"username": "alice"}) == {
        "id": None,
        "created_at": None,
        "updated_at": None,
        "username": "alice",
        "custom_id": None,
        "tags": None,
    }


def test_keyauth_credential_defaults() -> None:
    assert validate("keyauth_credentials", {"consumer": {"id": CONSUMER_ID}}) == {
        "id": None,
        "created_at": None,
        "consumer": {"id": CONSUMER_ID},
        "key": None,
        "ttl": None,
        "tags": None,
    }


def test_basicauth_credential_defaults() -> None:
    data = {"consumer": {"id": CONSUMER_ID}, "username": "alice", "password": "s3cret"}
    assert validate("basicauth_credentials", data) == {
        "id": None,
        "created_at": None,
        "consumer": {"id": CONSUMER_ID},
        "username": "alice",
        "password": "s3cret",
        "tags": None,
    }


def test_jwt_secret_defaults() -> None:
    assert validate("jwt_secrets", {"consumer": {"id": CONSUMER_ID}}) == {
        "id": None,
        "created_at": None,
        "consumer": {"id": CONSUMER_ID},
        "key": None,
        "secret": None,
        "rsa_public_key": None,
        "algorithm": "HS256",
        "tags": None,
    }


def test_acl_defaults() -> None:
    assert validate("acls", {"consumer": {"id": CONSUMER_ID}, "group": "admins"}) == {
        "id": None,
        "created_at": None,
        "consumer": {"id": CONSUMER_ID},
        "group": "admins",
        "tags": None,
    }


# -- plugins -----------------------------------------------------------------------------------


def test_plugin_defaults() -> None:
    assert validate("plugins", {"name": "key-auth"}) == {
        "id": None,
        "name": "key-auth",
        "instance_name": None,
        "created_at": None,
        "updated_at": None,
        "route": None,
        "service": None,
        "consumer": None,
        # Kong's key-auth defaults, filled in as Kong stores them.
        "config": {
            "key_names": ["apikey"],
            "hide_credentials": False,
            "anonymous": None,
            "key_in_header": True,
            "key_in_query": True,
            "key_in_body": False,
            "run_on_preflight": True,
            "realm": None,
        },
        "protocols": ["grpc", "grpcs", "http", "https"],
        "enabled": True,
        "tags": None,
    }


def test_config_of_a_plugin_without_a_schema_is_kept_as_given() -> None:
    config = {"key_names": ["apikey"], "nested": {"a": [1, 2]}}
    result = validate("plugins", {"name": "my-custom-plugin", "config": config})
    assert result["config"] == {"key_names": ["apikey"], "nested": {"a": [1, 2]}}
    # A copy, not the caller's object: later edits to the input must not leak into the entity.
    config["nested"]["a"].append(3)
    assert result["config"]["nested"]["a"] == [1, 2]


# -- upstreams and targets ---------------------------------------------------------------------


def test_upstream_defaults() -> None:
    assert validate("upstreams", {"name": "backend.internal"}) == UPSTREAM_DEFAULTS


def test_upstream_partial_healthchecks_get_the_other_defaults() -> None:
    data = {
        "name": "backend.internal",
        "healthchecks": {"active": {"timeout": 5, "healthy": {"interval": 2}}},
    }
    expected = copy.deepcopy(UPSTREAM_DEFAULTS)
    expected["healthchecks"]["active"]["timeout"] = 5
    expected["healthchecks"]["active"]["healthy"]["interval"] = 2
    assert validate("upstreams", data) == expected


def test_upstream_default_trees_are_not_shared_between_entities() -> None:
    first = validate("upstreams", {"name": "a.internal"})
    first["healthchecks"]["active"]["healthy"]["http_statuses"].append(999)
    second = validate("upstreams", {"name": "b.internal"})
    assert second["healthchecks"]["active"]["healthy"]["http_statuses"] == [200, 302]


@pytest.mark.parametrize(
    ("target", "stored"),
    [
        ("host", "host:8000"),
        ("host:9000", "host:9000"),
        ("10.0.0.1", "10.0.0.1:8000"),
        ("10.0.0.1:81", "10.0.0.1:81"),
        ("[::1]", "[::1]:8000"),
        ("[::1]:8443", "[::1]:8443"),
    ],
)
def test_target_defaults_and_port_normalisation(target: str, stored: str) -> None:
    assert validate("targets", {"target": target, "upstream": {"id": UPSTREAM_ID}}) == {
        "id": None,
        "created_at": None,
        "updated_at": None,
        "upstream": {"id": UPSTREAM_ID},
        "target": stored,
        "weight": 100,
        "tags": None,
    }


# -- certificates, snis, ca_certificates -------------------------------------------------------


def test_certificate_defaults_ec() -> None:
    pair = ec_pair()
    assert validate("certificates", {"cert": pair.cert, "key": pair.key}) == {
        "id": None,
        "created_at": None,
        "updated_at": None,
        "cert": pair.cert,
        "key": pair.key,
        "cert_alt": None,
        "key_alt": None,
        "tags": None,
    }


def test_certificate_with_rsa_alternate() -> None:
    main, alt = ec_pair(), rsa_pair()
    data = {"cert": main.cert, "key": main.key, "cert_alt": alt.cert, "key_alt": alt.key, "tags": ["edge"]}
    assert validate("certificates", data) == {
        "id": None,
        "created_at": None,
        "updated_at": None,
        "cert": main.cert,
        "key": main.key,
        "cert_alt": alt.cert,
        "key_alt": alt.key,
        "tags": ["edge"],
    }


def test_certificate_defaults_rsa() -> None:
    pair = rsa_pair()
    result = validate("certificates", {"cert": pair.cert, "key": pair.key})
    assert (result["cert"], result["key"], result["cert_alt"], result["key_alt"]) == (
        pair.cert,
        pair.key,
        None,
        None,
    )


@pytest.mark.parametrize("name", ["example.com", "*.example.com", "example.*"])
def test_sni_defaults(name: str) -> None:
    assert validate("snis", {"name": name, "certificate": {"id": CERTIFICATE_ID}}) == {
        "id": None,
        "created_at": None,
        "updated_at": None,
        "name": name,
        "tags": None,
        "certificate": {"id": CERTIFICATE_ID},
    }


def test_ca_certificate_defaults_and_digest() -> None:
    pem = ca().cert
    assert validate("ca_certificates", {"cert": pem}) == {
        "id": None,
        "created_at": None,
        "updated_at": None,
        "cert": pem,
        "cert_digest": sha256_hex(pem),
        "tags": None,
    }
