"""Routes: the rules that match requests to services (Kong's ``routes`` entity, traditional_compatible).

Kong validates a route against a sub-schema chosen by its protocols (http, stream or grpc),
each with its own "at least one matcher" rule and forbidden fields; those rules are written
here as plain checks with Kong's messages.
"""

from __future__ import annotations

from typing import Any, Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t
from zonegate.core.errors import ENTITY_KEY
from zonegate.core.schema import Entity, EntitySchema, custom, is_empty

DEFAULT_PROTOCOLS: Final = ["http", "https"]
EXCLUSIVE_PROTOCOL_SETS: Final = (
    ("http", "https"),
    ("tcp", "tls", "udp"),
    ("tls_passthrough",),
    ("grpc", "grpcs"),
)
SNI_PROTOCOLS: Final = ("grpcs", "https", "tls", "tls_passthrough")


def _quoted(names: tuple[str, ...]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _exclusive_sets(protocols: list[str]) -> str | None:
    """Kong names the sets the value draws from, in the order the value first meets them."""
    used: list[tuple[str, ...]] = []
    for protocol in protocols:
        for group in EXCLUSIVE_PROTOCOL_SETS:
            if protocol in group and group not in used:
                used.append(group)
    if len(used) <= 1:
        return None
    rendered = ", ".join("(" + ", ".join(f"'{p}'" for p in group) + ")" for group in used)
    return f"these sets are mutually exclusive: {rendered}"


def _family(protocols: list[str]) -> str:
    """Kong picks the sub-schema from the first protocol."""
    first = protocols[0] if protocols else "http"
    if first in ("http", "https"):
        return "http"
    if first in ("grpc", "grpcs"):
        return "grpc"
    return "stream"


def grpc_strip_path_default(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """gRPC routes default ``strip_path`` to false and refuse true (Kong's grpc sub-schema)."""
    protocols = raw.get("protocols")
    if isinstance(protocols, list) and protocols and protocols[0] in ("grpc", "grpcs"):
        if raw.get("strip_path") is True:
            return raw, {"strip_path": "cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'"}
        raw.setdefault("strip_path", False)
    return raw, {}


def _forbid(entity: Entity, names: tuple[str, ...], when: str) -> dict[str, Any]:
    return {n: f"cannot set '{n}' when 'protocols' is {when}" for n in names if not is_empty(entity.get(n))}


def _need_one_of(entity: Entity, names: tuple[str, ...], message: str) -> list[str]:
    if any(not is_empty(entity.get(n)) for n in names):
        return []
    return [message.format(_quoted(names))]


def check_protocol_rules(entity: Entity) -> dict[str, Any]:
    protocols: list[str] = entity.get("protocols") or []
    errors: dict[str, Any] = {}
    exclusive = _exclusive_sets(protocols)
    if exclusive is not None:
        return {"protocols": exclusive}
    entity_errors: list[str] = []
    if not any(p in SNI_PROTOCOLS for p in protocols) and not is_empty(entity.get("snis")):
        errors["snis"] = "length must be 0"
        entity_errors.append(
            "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'"
        )
    family = _family(protocols)
    if family == "http":
        errors.update(_forbid(entity, ("sources", "destinations"), "'http' or 'https'"))
        if "https" in protocols:
            entity_errors += _need_one_of(
                entity,
                ("methods", "hosts", "headers", "paths", "snis"),
                "must set one of {} when 'protocols' is 'https'",
            )
        else:
            entity_errors += _need_one_of(
                entity,
                ("methods", "hosts", "headers", "paths"),
                "must set one of {} when 'protocols' is 'http'",
            )
    elif family == "grpc":
        errors.update(_forbid(entity, ("methods", "sources", "destinations"), "'grpc' or 'grpcs'"))
        if "grpcs" in protocols:
            entity_errors += _need_one_of(
                entity,
                ("hosts", "headers", "paths", "snis"),
                "must set one of {} when 'protocols' is 'grpcs'",
            )
        else:
            entity_errors += _need_one_of(
                entity, ("hosts", "headers", "paths"), "must set one of {} when 'protocols' is 'grpc'"
            )
    else:
        errors.update(
            _forbid(
                entity,
                ("methods", "hosts", "paths", "headers"),
                "'tcp', 'tls', 'tls_passthrough' or 'udp'",
            )
        )
        if protocols == ["tls_passthrough"]:
            if is_empty(entity.get("snis")):
                entity_errors.append("must set snis when 'protocols' is 'tls_passthrough'")
        else:
            entity_errors += _need_one_of(
                entity,
                ("sources", "destinations", "snis"),
                "must set one of {} when 'protocols' is 'tcp', 'tls' or 'udp'",
            )
    if entity_errors:
        errors[ENTITY_KEY] = entity_errors
    return errors


SCHEMA: Final = EntitySchema(
    name="routes",
    endpoint_key="name",
    description="Rules that match client requests and send them to a service.",
    fields=(
        ("id", t.uuid),
        ("created_at", t.auto_timestamp_s),
        ("updated_at", t.auto_timestamp_s),
        ("name", t.utf8_name),
        ("protocols", t.set_of_protocols(t.PROTOCOLS, DEFAULT_PROTOCOLS)),
        ("methods", t.methods),
        ("hosts", t.hosts),
        ("paths", t.router_paths),
        ("headers", t.headers),
        (
            "https_redirect_status_code",
            f.integer(
                f.one_of(426, 301, 302, 307, 308),
                required=True,
                default=426,
                description="Status answered when only the protocol does not match.",
            ),
        ),
        ("regex_priority", f.integer(default=0, description="Order among regex routes; higher wins.")),
        ("strip_path", f.boolean(required=True, default=True, description="Strip the matched path prefix.")),
        (
            "path_handling",
            f.string(f.one_of("v0", "v1"), default="v0", description="How service and request paths join."),
        ),
        (
            "preserve_host",
            f.boolean(required=True, default=False, description="Send the client's Host upstream."),
        ),
        ("request_buffering", f.boolean(required=True, default=True, description="Buffer request bodies.")),
        ("response_buffering", f.boolean(required=True, default=True, description="Buffer response bodies.")),
        ("snis", t.snis),
        ("sources", t.sources),
        ("destinations", t.destinations),
        ("tags", t.tags),
        ("service", f.foreign("services", description="The service this route sends traffic to.")),
    ),
    prepare=(grpc_strip_path_default,),
    checks=(
        custom(
            ("protocols", "methods", "hosts", "paths", "headers", "snis", "sources", "destinations"),
            check_protocol_rules,
            runs_with_invalid=("protocols",),
        ),
    ),
)
