"""Upstreams: virtual hostnames that balance load over targets (Kong's ``upstreams`` entity).

Health-check defaults are Kong's: every probe interval and counter is 0 (off) until set.
"""

from __future__ import annotations

from typing import Any, Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t
from zonegate.core.net import HostError, parse_host_port
from zonegate.core.schema import (
    EntitySchema,
    conditional,
    distinct,
    equals,
    must_be_one_of,
    must_be_set,
)

HASH_ON: Final = ("none", "consumer", "ip", "header", "cookie", "path", "query_arg", "uri_capture")
ALGORITHMS: Final = ("consistent-hashing", "least-connections", "round-robin", "latency")

_seconds = f.number(f.between(0, 65535))
_positive_int = f.integer(f.between(1, 2**31))
_counter = f.integer(f.between(0, 255), default=0)
_statuses = f.array(f.integer(f.between(100, 999)))
_header_values = f.map_of(t.header_name, f.array(f.string()))

ACTIVE_HEALTHY_STATUSES: Final = [200, 302]
ACTIVE_UNHEALTHY_STATUSES: Final = [429, 404, 500, 501, 502, 503, 504, 505]
PASSIVE_HEALTHY_STATUSES: Final = [
    200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
    300, 301, 302, 303, 304, 305, 306, 307, 308,
]  # fmt: skip
PASSIVE_UNHEALTHY_STATUSES: Final = [429, 500, 503]

_active = f.record(
    ("type", f.string(f.one_of("tcp", "http", "https", "grpc", "grpcs"), default="http")),
    ("timeout", _seconds(default=1)),
    ("concurrency", _positive_int(default=10)),
    ("http_path", t.path(default="/")),
    ("https_sni", t.sni),
    ("https_verify_certificate", f.boolean(default=True)),
    ("headers", _header_values),
    (
        "healthy",
        f.record(
            ("interval", _seconds(default=0)),
            ("http_statuses", _statuses(default=ACTIVE_HEALTHY_STATUSES)),
            ("successes", _counter),
            default={},
        ),
    ),
    (
        "unhealthy",
        f.record(
            ("interval", _seconds(default=0)),
            ("http_statuses", _statuses(default=ACTIVE_UNHEALTHY_STATUSES)),
            ("tcp_failures", _counter),
            ("timeouts", _counter),
            ("http_failures", _counter),
            default={},
        ),
    ),
    default={},
)

_passive = f.record(
    ("type", f.string(f.one_of("tcp", "http", "https", "grpc", "grpcs"), default="http")),
    (
        "healthy",
        f.record(
            ("http_statuses", _statuses(default=PASSIVE_HEALTHY_STATUSES)),
            ("successes", _counter),
            default={},
        ),
    ),
    (
        "unhealthy",
        f.record(
            ("http_statuses", _statuses(default=PASSIVE_UNHEALTHY_STATUSES)),
            ("tcp_failures", _counter),
            ("timeouts", _counter),
            ("http_failures", _counter),
            default={},
        ),
    ),
    default={},
)

HEALTHCHECKS: Final = f.record(
    ("active", _active),
    ("passive", _passive),
    ("threshold", f.number(f.between(0, 100), default=0)),
    default={},
    description="Active probes and passive (circuit-breaker) health checks.",
)


def _upstream_name(value: str) -> str | None:
    try:
        parsed = parse_host_port(value)
    except HostError:
        return f"Invalid name ('{value}'); must be a valid hostname"
    if parsed.type != "name":
        return f"Invalid name ('{value}'); no ip addresses allowed"
    if parsed.port is not None:
        return f"Invalid name ('{value}'); no port allowed"
    return None


def _hash_checks() -> tuple[Any, ...]:
    others = {
        "consumer": ("none", "ip", "header", "cookie", "path", "query_arg", "uri_capture"),
        "ip": ("none", "consumer", "header", "cookie", "path", "query_arg", "uri_capture"),
        "path": ("none", "consumer", "ip", "header", "cookie", "query_arg", "uri_capture"),
    }
    checks: list[Any] = [
        conditional("hash_on", equals("header"), "hash_on_header", must_be_set),
        conditional("hash_fallback", equals("header"), "hash_fallback_header", must_be_set),
        conditional("hash_on", equals("cookie"), "hash_on_cookie", must_be_set),
        conditional("hash_fallback", equals("cookie"), "hash_on_cookie", must_be_set),
        conditional("hash_on", equals("query_arg"), "hash_on_query_arg", must_be_set),
        conditional("hash_fallback", equals("query_arg"), "hash_fallback_query_arg", must_be_set),
        conditional("hash_on", equals("uri_capture"), "hash_on_uri_capture", must_be_set),
        conditional("hash_fallback", equals("uri_capture"), "hash_fallback_uri_capture", must_be_set),
        conditional("hash_on", equals("none"), "hash_fallback", must_be_one_of("none")),
        conditional("hash_on", equals("cookie"), "hash_fallback", must_be_one_of("none")),
    ]
    for hash_on, allowed in others.items():
        checks.append(conditional("hash_on", equals(hash_on), "hash_fallback", must_be_one_of(*allowed)))
    checks += [
        distinct("hash_on_header", "hash_fallback_header"),
        distinct("hash_on_query_arg", "hash_fallback_query_arg"),
        distinct("hash_on_uri_capture", "hash_fallback_uri_capture"),
    ]
    return tuple(checks)


_non_empty = f.string(f.length_between(1))

SCHEMA: Final = EntitySchema(
    name="upstreams",
    endpoint_key="name",
    description="A virtual hostname that load-balances over targets.",
    fields=(
        ("id", t.uuid),
        ("created_at", t.auto_timestamp_s),
        ("updated_at", t.auto_timestamp_s),
        ("name", f.string(_upstream_name, required=True, unique=True, description="A hostname.")),
        (
            "algorithm",
            f.string(f.one_of(*ALGORITHMS), default="round-robin", description="Balancing algorithm."),
        ),
        ("hash_on", f.string(f.one_of(*HASH_ON), default="none", description="Input of consistent hashing.")),
        (
            "hash_fallback",
            f.string(f.one_of(*HASH_ON), default="none", description="Hash input if hash_on has none."),
        ),
        ("hash_on_header", t.header_name),
        ("hash_fallback_header", t.header_name),
        ("hash_on_cookie", f.string(f.matches(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"))),
        ("hash_on_cookie_path", t.path(default="/")),
        ("hash_on_query_arg", _non_empty),
        ("hash_fallback_query_arg", _non_empty),
        ("hash_on_uri_capture", _non_empty),
        ("hash_fallback_uri_capture", _non_empty),
        ("slots", f.integer(f.between(10, 2**16), default=10000, description="Slots on the hash ring.")),
        ("healthchecks", HEALTHCHECKS),
        ("tags", t.tags),
        ("host_header", t.host(description="Host header sent to targets.")),
        ("client_certificate", f.foreign("certificates", description="Client certificate for targets.")),
        ("use_srv_name", f.boolean(default=False, description="Use the SRV record name as SNI.")),
    ),
    checks=_hash_checks(),
)
