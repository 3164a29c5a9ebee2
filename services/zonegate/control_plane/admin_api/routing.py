"""The Admin API's route table: Kong paths with ``{param}`` segments, each also matched with a trailing slash.

Kong's router answers ``/services/`` like ``/services`` (``api_helpers.default_route``); aiohttp
does not, so every path is registered twice. A path whose method is missing answers 405 through
aiohttp, which the error middleware turns into Kong's body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Routes:
    """Paths in registration order (the first match wins, so specific paths go first)."""

    def __init__(self) -> None:
        self._paths: dict[str, dict[str, Handler]] = {}

    def add(self, path: str, methods: dict[str, Handler]) -> None:
        self._paths.setdefault(path, {}).update(methods)

    def paths(self) -> list[str]:
        return list(self._paths)

    def install(self, app: web.Application) -> None:
        for path, methods in self._paths.items():
            variants = [path] if path == "/" else [path, path + "/"]
            for variant in variants:
                resource = app.router.add_resource(variant)
                for method, handler in methods.items():
                    resource.add_route(method, handler)
