"""The plugins Zonegate bundles, by Kong's names, and what the ``plugins`` setting enables.

``plugins = bundled`` (the default) means every name below; extra names may follow it, and
``off`` means none. Until each plugin has its own module (with ``NAME``, ``PRIORITY`` and
``VERSION``, see STYLE.md point 2), this table carries Kong's execution priorities so the Admin
API can show them in ``GET /`` as Kong does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from zonegate import __version__

BUNDLED_KEYWORD: Final = "bundled"

# Kong's handler priorities (higher runs first), from each plugin's handler.lua.
BUNDLED_PRIORITIES: Final[dict[str, int]] = {
    "correlation-id": 100001,
    "bot-detection": 2500,
    "cors": 2000,
    "jwt": 1450,
    "key-auth": 1250,
    "basic-auth": 1100,
    "ip-restriction": 990,
    "request-size-limiting": 951,
    "acl": 950,
    "rate-limiting": 910,
    "request-transformer": 801,
    "response-transformer": 800,
    "proxy-cache": 100,
    "opentelemetry": 14,
    "prometheus": 13,
    "http-log": 12,
    "file-log": 9,
    "request-termination": 2,
}

BUNDLED: Final[tuple[str, ...]] = tuple(sorted(BUNDLED_PRIORITIES))


def enabled_plugins(setting: Iterable[str]) -> tuple[str, ...]:
    """The plugin names a ``plugins`` setting enables, ``bundled`` expanded, sorted, no duplicates."""
    names: set[str] = set()
    for name in setting:
        if name == BUNDLED_KEYWORD:
            names.update(BUNDLED)
        else:
            names.add(name)
    return tuple(sorted(names))


def plugin_versions(setting: Iterable[str]) -> dict[str, str]:
    """Each enabled plugin with its version. Bundled plugins carry the gateway's own version,
    as Kong's do; the hybrid-mode compatibility check compares these between CP and DP."""
    return dict.fromkeys(enabled_plugins(setting), __version__)
