"""Every plugin's config schema by name: what validates the ``config`` of a plugin entity.

Pure (core imports it to validate plugin entities), so each plugin keeps its schema in a
``schema`` module apart from its handler, as Kong keeps ``schema.lua`` apart from
``handler.lua``. Plugins are found by package: every ``zonegate.plugins.<package>`` with a
``schema`` module (``NAME``, ``CONFIG`` and optionally ``NO_CONSUMER`` and ``ENTITY_CHECKS``) is
one. A bundled plugin without a schema yet keeps a free-form ``config``.

``ENTITY_CHECKS`` are Kong's plugin-level ``entity_checks`` (``only_one_of``, ``conditional``...)
over fields named ``config.<field>``: their errors land where Kong puts them, ``@entity`` at the
top of the plugin and field errors under ``config``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Final

import zonegate.plugins
from zonegate.core.fields import Field
from zonegate.core.schema import EntityCheck


@dataclass(frozen=True, slots=True)
class PluginSchema:
    name: str
    config: Field
    no_consumer: bool = False  # Kong's typedefs.no_consumer: cannot be scoped to a consumer
    entity_checks: tuple[EntityCheck, ...] = ()


def plugin_packages() -> list[str]:
    """The plugin packages of this build, by module name (``key_auth``, ...)."""
    return sorted(info.name for info in pkgutil.iter_modules(zonegate.plugins.__path__) if info.ispkg)


def _load() -> dict[str, PluginSchema]:
    found: dict[str, PluginSchema] = {}
    for package in plugin_packages():
        module = importlib.import_module(f"zonegate.plugins.{package}.schema")
        found[module.NAME] = PluginSchema(
            module.NAME,
            module.CONFIG,
            getattr(module, "NO_CONSUMER", False),
            tuple(getattr(module, "ENTITY_CHECKS", ())),
        )
    return found


SCHEMAS: Final[dict[str, PluginSchema]] = _load()


def plugin_schema(name: str) -> PluginSchema | None:
    return SCHEMAS.get(name)
