"""Every plugin's config schema by name: what validates the ``config`` of a plugin entity.

Pure (core imports it to validate plugin entities), so each plugin keeps its schema in a
``schema`` module apart from its handler, as Kong keeps ``schema.lua`` apart from
``handler.lua``. A bundled plugin without a schema here yet keeps a free-form ``config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from zonegate.core.fields import Field
from zonegate.plugins.correlation_id import schema as correlation_id
from zonegate.plugins.key_auth import schema as key_auth
from zonegate.plugins.request_termination import schema as request_termination


@dataclass(frozen=True, slots=True)
class PluginSchema:
    name: str
    config: Field
    no_consumer: bool = False  # Kong's typedefs.no_consumer: cannot be scoped to a consumer


SCHEMAS: Final[dict[str, PluginSchema]] = {
    module.NAME: PluginSchema(module.NAME, module.CONFIG, getattr(module, "NO_CONSUMER", False))
    for module in (correlation_id, key_auth, request_termination)
}


def plugin_schema(name: str) -> PluginSchema | None:
    return SCHEMAS.get(name)
