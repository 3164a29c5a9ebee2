"""Consumers: the users or applications that call the APIs (Kong's ``consumers`` entity)."""

from __future__ import annotations

from typing import Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t
from zonegate.core.schema import EntitySchema, at_least_one_of

SCHEMA: Final = EntitySchema(
    name="consumers",
    endpoint_key="username",
    description="A user or application that consumes the APIs.",
    fields=(
        ("id", t.uuid),
        ("created_at", t.auto_timestamp_s),
        ("updated_at", t.auto_timestamp_s),
        ("username", f.string(unique=True, description="Unique user name.")),
        ("custom_id", f.string(unique=True, description="Unique id from another system.")),
        ("tags", t.tags),
    ),
    checks=(at_least_one_of("custom_id", "username"),),
)
