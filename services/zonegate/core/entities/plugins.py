"""Plugin instances, scoped globally or to a service, route and/or consumer (Kong's ``plugins``).

``config`` is validated against the named plugin's own schema (``zonegate.plugins.schemas``) and
comes out with Kong's defaults filled, so every node hashes and runs the same config. A plugin
that Kong forbids on consumers (``no_consumer``: the auth plugins) refuses a ``consumer``. A
bundled plugin without a schema yet keeps a free-form ``config``.
"""

from __future__ import annotations

from typing import Any, Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t
from zonegate.core.errors import ENTITY_KEY
from zonegate.core.schema import EntityCheck, EntitySchema
from zonegate.plugins.schemas import plugin_schema

DEFAULT_PROTOCOLS: Final = ["grpc", "grpcs", "http", "https"]


def _plugin_config(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    name = raw.get("name")
    schema = plugin_schema(name) if isinstance(name, str) else None
    if schema is None:
        return raw, {}
    errors: dict[str, Any] = {}
    if schema.no_consumer and raw.get("consumer") is not None:
        errors["consumer"] = "value must be null"
    config = raw.get("config")
    value, config_errors = schema.config.validate({} if config is None else config)
    if config_errors:
        errors["config"] = config_errors
    else:
        _run_entity_checks(schema.entity_checks, value, errors)
    if errors:
        return raw, errors
    return {**raw, "config": value}, {}


def _run_entity_checks(
    checks: tuple[EntityCheck, ...], config: dict[str, Any], errors: dict[str, Any]
) -> None:
    """Kong's plugin ``entity_checks`` name fields ``config.<name>``; so does their view here."""
    view = {f"config.{name}": value for name, value in config.items()}
    for check in checks:
        for key, found in check.fn(view).items():
            if key == ENTITY_KEY:
                errors.setdefault(ENTITY_KEY, []).extend(found)
            else:
                errors.setdefault("config", {})[key.removeprefix("config.")] = found


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
    prepare=(_plugin_config,),
)
