"""Services: where a route sends traffic (Kong's ``services`` entity, with the ``url`` shorthand)."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

from zonegate.core import fields as f
from zonegate.core import typedefs as t
from zonegate.core.schema import (
    EntitySchema,
    conditional,
    in_set,
    must_be_null,
)

DEFAULT_PROTOCOL: Final = "http"
DEFAULT_PORT: Final = 80
# Kong allows upstream TLS settings (client certificate, verification) with these only.
TLS_PROTOCOLS: Final = ("https", "tls")
NO_PATH_PROTOCOLS: Final = ("tcp", "tls", "udp", "grpc", "grpcs")


def expand_url(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``url: https://example.com:8443/api`` is sugar for protocol, host, port and path."""
    value = raw.pop("url")
    if value is None:
        return raw, {}
    if not isinstance(value, str):
        return raw, {"url": "expected a string"}
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        return raw, {"url": f"could not parse url. {exc}"}
    # Like Kong's url shorthand this only parses; the parts are then validated as fields, so
    # a bad port reads "port: value should be between 0 and 65535".
    _, _, port_text = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")
    port: int | None = int(port_text) if port_text.isascii() and port_text.isdigit() else None
    protocol = parts.scheme.lower() or ({80: "http", 443: "https"}.get(port or 0) or DEFAULT_PROTOCOL)
    if port is None:
        port = {"http": 80, "https": 443}.get(protocol, DEFAULT_PORT)
    raw["protocol"] = protocol
    raw["host"] = parts.hostname or None
    raw["port"] = port
    raw["path"] = parts.path or None
    return raw, {}


SCHEMA: Final = EntitySchema(
    name="services",
    endpoint_key="name",
    description="A backend API or microservice that routes send traffic to.",
    fields=(
        ("id", t.uuid),
        ("created_at", t.auto_timestamp_s),
        ("updated_at", t.auto_timestamp_s),
        ("name", t.utf8_name),
        ("retries", f.integer(f.between(0, 32767), default=5, description="Retries on connection failure.")),
        ("protocol", t.protocol(required=True, default=DEFAULT_PROTOCOL)),
        ("host", t.host(required=True)),
        ("port", t.port(required=True, default=DEFAULT_PORT)),
        ("path", t.path),
        ("connect_timeout", t.nonzero_timeout(default=60000)),
        ("write_timeout", t.nonzero_timeout(default=60000)),
        ("read_timeout", t.nonzero_timeout(default=60000)),
        ("tags", t.tags),
        (
            "client_certificate",
            f.foreign("certificates", description="Client certificate for upstream mTLS."),
        ),
        ("tls_verify", f.boolean(description="Verify the upstream's TLS certificate.")),
        ("tls_verify_depth", f.integer(f.between(0, 64), description="Maximum verification chain depth.")),
        (
            "ca_certificates",
            f.array(f.string(f.is_uuid), description="Ids of CA certificates to verify with."),
        ),
        ("enabled", f.boolean(required=True, default=True, description="Disabled services are not proxied.")),
    ),
    shorthands=(("url", expand_url),),
    checks=(
        conditional("protocol", in_set(*NO_PATH_PROTOCOLS), "path", must_be_null),
        conditional("protocol", lambda p: p not in TLS_PROTOCOLS, "client_certificate", must_be_null),
        conditional("protocol", lambda p: p not in TLS_PROTOCOLS, "tls_verify", must_be_null),
        conditional("protocol", lambda p: p not in TLS_PROTOCOLS, "tls_verify_depth", must_be_null),
        conditional("protocol", lambda p: p not in TLS_PROTOCOLS, "ca_certificates", must_be_null),
    ),
)
