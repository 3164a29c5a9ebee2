"""The plugin handlers this build ships, by Kong's names, and which ones a node loads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from zonegate.plugins.api import Plugin
from zonegate.plugins.bundled import enabled_plugins
from zonegate.plugins.correlation_id.handler import CorrelationId
from zonegate.plugins.key_auth.handler import KeyAuth
from zonegate.plugins.request_termination.handler import RequestTermination

HANDLERS: Final[dict[str, type[Plugin]]] = {
    handler.NAME: handler for handler in (CorrelationId, KeyAuth, RequestTermination)
}


def loaded_handlers(setting: Iterable[str]) -> dict[str, type[Plugin]]:
    """The handlers of the plugins the ``plugins`` setting enables."""
    enabled = set(enabled_plugins(setting))
    return {name: handler for name, handler in HANDLERS.items() if name in enabled}
