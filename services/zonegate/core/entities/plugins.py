"""Plugin instances, scoped globally or to a service, route and/or consumer (Kong's ``plugins``).

Until plugin schemas exist, ``config`` is a free-form object; the plugin framework will validate
it per plugin name.
"""

from __future__ import annotations

from typing import Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t
from zonegate.core.schema import EntitySchema

DEFAULT_PROTOCOLS: Final = ["grpc", "grpcs", "http", "https"]

SCHEMA: Final = EntitySchema(
    name="plugins",
    endpoint_key="instance_name",
    cache_key=("name", "route", "service", "consumer"),
    description="A plugin instance and its configuration.",
    fields=(
        ("id", t.uuid),
        ("name", f.string(required=True, description="The plugin's name, e.g. key-auth.")),
        ("instance_name", t.utf8_name),
        ("created_at", t.auto_timestamp_s),
        ("updated_at", t.auto_timestamp_s),
        ("route", f.foreign("routes", on_delete="cascade", description="Only for this route.")),
        ("service", f.foreign("services", on_delete="cascade", description="Only for this service.")),
        ("consumer", f.foreign("consumers", on_delete="cascade", description="Only for this consumer.")),
        ("config", f.record(required=True, default={}, description="The plugin's configuration.")),
        ("protocols", t.set_of_protocols(t.PROTOCOLS, DEFAULT_PROTOCOLS)),
        ("enabled", f.boolean(required=True, default=True, description="Whether the plugin runs.")),
        ("tags", t.tags),
    ),
)
