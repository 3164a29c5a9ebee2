"""Services: Kong's conditional rules on ``path`` and the upstream TLS fields, with full bodies.

Kong 3.x (``kong/db/schema/entities/services.lua``): ``path`` must be null when the protocol is
tcp, tls, udp, grpc or grpcs; ``client_certificate``, ``tls_verify``, ``tls_verify_depth`` and
``ca_certificates`` must be null unless the protocol is https or tls.
"""

from __future__ import annotations

from typing import Any

import pytest

from .entity_helpers import CERTIFICATE_ID, conditional, kong_body, validate, violation

CA_ID = "2f6f8c1e-3b0a-4d59-9c47-5e1d7a9b3c64"

TLS_FIELDS: list[tuple[str, Any]] = [
    ("client_certificate", {"id": CERTIFICATE_ID}),
    ("tls_verify", True),
    ("tls_verify_depth", 3),
    ("ca_certificates", [CA_ID]),
]


@pytest.mark.parametrize("protocol", ["tcp", "tls", "udp", "grpc", "grpcs"])
def test_path_must_be_null_for_protocols_without_paths(protocol: str) -> None:
    body = violation("services", {"host": "example.com", "protocol": protocol, "path": "/api"})
    assert body == kong_body(
        "2 schema violations (failed conditional validation given value of field 'protocol'; "
        "path: value must be null)",
        {"@entity": [conditional("protocol")], "path": "value must be null"},
    )


def test_path_is_allowed_with_tls_passthrough() -> None:
    # Kong's path rule lists tcp, tls, udp, grpc, grpcs only; tls_passthrough is not in it.
    result = validate("services", {"host": "example.com", "protocol": "tls_passthrough", "path": "/api"})
    assert (result["protocol"], result["path"]) == ("tls_passthrough", "/api")


@pytest.mark.parametrize("protocol", ["http", "tcp", "udp", "grpc"])
@pytest.mark.parametrize(("field", "value"), TLS_FIELDS)
def test_upstream_tls_fields_need_a_tls_protocol(protocol: str, field: str, value: Any) -> None:
    body = violation("services", {"host": "example.com", "protocol": protocol, field: value})
    assert body == kong_body(
        "2 schema violations (failed conditional validation given value of field 'protocol'; "
        f"{field}: value must be null)",
        {"@entity": [conditional("protocol")], field: "value must be null"},
    )


@pytest.mark.parametrize(("field", "value"), TLS_FIELDS)
def test_upstream_tls_fields_are_refused_with_grpcs(field: str, value: Any) -> None:
    # Kong: not_one_of = {"https", "tls"}; grpcs is not a protocol these fields may be set with.
    body = violation("services", {"host": "example.com", "protocol": "grpcs", field: value})
    assert body == kong_body(
        "2 schema violations (failed conditional validation given value of field 'protocol'; "
        f"{field}: value must be null)",
        {"@entity": [conditional("protocol")], field: "value must be null"},
    )


@pytest.mark.parametrize("protocol", ["https", "tls"])
def test_upstream_tls_fields_are_accepted_with_https_and_tls(protocol: str) -> None:
    data = {"host": "example.com", "protocol": protocol, **dict(TLS_FIELDS)}
    result = validate("services", data)
    assert {name: result[name] for name, _ in TLS_FIELDS} == dict(TLS_FIELDS)


def test_every_failed_conditional_is_reported() -> None:
    data = {"host": "example.com", "protocol": "http", "tls_verify": False, "ca_certificates": [CA_ID]}
    body = violation("services", data)
    assert body == kong_body(
        "4 schema violations (failed conditional validation given value of field 'protocol'; "
        "failed conditional validation given value of field 'protocol'; "
        "ca_certificates: value must be null; tls_verify: value must be null)",
        {
            "@entity": [conditional("protocol"), conditional("protocol")],
            "ca_certificates": "value must be null",
            "tls_verify": "value must be null",
        },
    )


def test_conditional_runs_even_when_the_then_field_is_invalid() -> None:
    # Kong's conditional checker has run_with_invalid_fields = true: the then-field's own error
    # is replaced by the conditional's, and the @entity entry is added.
    body = violation("services", {"host": "example.com", "protocol": "tcp", "path": "no-slash"})
    assert body == kong_body(
        "2 schema violations (failed conditional validation given value of field 'protocol'; "
        "path: value must be null)",
        {"@entity": [conditional("protocol")], "path": "value must be null"},
    )


def test_url_shorthand_with_a_bad_port_reports_the_port() -> None:
    # Kong's url shorthand only parses (socket.url); the port it yields is then validated as port.
    body = violation("services", {"url": "http://example.com:99999"})
    assert body == kong_body(
        "schema violation (port: value should be between 0 and 65535)",
        {"port": "value should be between 0 and 65535"},
    )


def test_url_shorthand_type_error_is_the_only_error() -> None:
    # Kong validates shorthands first and returns their errors alone (process_auto_fields).
    body = violation("services", {"url": 42})
    assert body == kong_body("schema violation (url: expected a string)", {"url": "expected a string"})


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("example.com:8080", "must not have a port"),
        ("bad host", "invalid value: bad host"),
    ],
)
def test_service_host_rules(host: str, message: str) -> None:
    body = violation("services", {"host": host})
    assert body == kong_body(f"schema violation (host: {message})", {"host": message})


def test_service_path_rules() -> None:
    body = violation("services", {"host": "example.com", "path": "/a//b"})
    assert body == kong_body(
        "schema violation (path: must not have empty segments)", {"path": "must not have empty segments"}
    )


@pytest.mark.parametrize("field", ["connect_timeout", "read_timeout", "write_timeout"])
def test_timeouts_are_at_least_one(field: str) -> None:
    body = violation("services", {"host": "example.com", field: 0})
    message = "value should be between 1 and 2147483646"
    assert body == kong_body(f"schema violation ({field}: {message})", {field: message})
