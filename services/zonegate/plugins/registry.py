"""The plugin handlers this build ships, by Kong's names, and which ones a node loads.

Each plugin package has a ``handler`` module with exactly one ``Plugin`` subclass; adding a
plugin is adding its package (``schemas.plugin_packages`` finds it).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable
from typing import Final

from zonegate.plugins.api import Plugin
from zonegate.plugins.bundled import enabled_plugins
from zonegate.plugins.schemas import plugin_packages


def _load() -> dict[str, type[Plugin]]:
    found: dict[str, type[Plugin]] = {}
    for package in plugin_packages():
        module = importlib.import_module(f"zonegate.plugins.{package}.handler")
        classes = [
            value
            for value in vars(module).values()
            if inspect.isclass(value)
            and issubclass(value, Plugin)
            and value is not Plugin
            and value.__module__ == module.__name__
        ]
        if len(classes) != 1:
            raise ImportError(f"{module.__name__} must define exactly one Plugin subclass")
        found[classes[0].NAME] = classes[0]
    return found


HANDLERS: Final[dict[str, type[Plugin]]] = _load()


def loaded_handlers(setting: Iterable[str]) -> dict[str, type[Plugin]]:
    """The handlers of the plugins the ``plugins`` setting enables."""
    enabled = set(enabled_plugins(setting))
    return {name: handler for name, handler in HANDLERS.items() if name in enabled}
