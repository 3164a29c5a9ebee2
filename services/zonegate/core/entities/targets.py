"""Targets: the host:port backends of an upstream, each with a weight (Kong's ``targets``)."""

from __future__ import annotations

from typing import Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t
from zonegate.core.net import HostError, parse_host_port
from zonegate.core.schema import Entity, EntitySchema

DEFAULT_TARGET_PORT: Final = 8000


def _target(value: str) -> str | None:
    try:
        parse_host_port(value)
    except HostError:
        return f"Invalid target ('{value}'); not a valid hostname or ip address"
    return None


def add_default_port(entity: Entity) -> None:
    """Kong stores ``host:port``, adding port 8000 when none was given."""
    target = entity.get("target")
    if isinstance(target, str):
        entity["target"] = parse_host_port(target).render(DEFAULT_TARGET_PORT)


SCHEMA: Final = EntitySchema(
    name="targets",
    endpoint_key="target",
    cache_key=("upstream", "target"),
    description="A backend address of an upstream.",
    fields=(
        ("id", t.uuid),
        ("created_at", t.auto_timestamp_s),
        ("updated_at", t.auto_timestamp_s),
        ("upstream", f.foreign("upstreams", required=True, on_delete="cascade", description="The upstream.")),
        ("target", f.string(_target, required=True, description="host:port (port defaults to 8000).")),
        ("weight", f.integer(f.between(0, 65535), default=100, description="Share of traffic; 0 disables.")),
        ("tags", t.tags),
    ),
    normalizers=(add_default_port,),
)
