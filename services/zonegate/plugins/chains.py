"""Plugin chains: which plugin instances run for a request, in which order, resolved once.

Kong's precedence when one plugin is configured at several scopes (``plugins_iterator.lua``),
most specific first: route+service+consumer, route+consumer, service+consumer, route+service,
consumer, route, service, global. One instance per plugin name wins; the chain runs by
``PRIORITY``, highest first. ``PluginSet`` is built when a config is applied and memoizes each
(route, service, consumer, protocol) combination, so a request does one dict lookup (and one
more once authentication has named a consumer). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any, Final

import structlog

from zonegate.core.config import Config
from zonegate.plugins.api import Plugin

log = structlog.get_logger(__name__)

Scope = tuple[str | None, str | None, str | None]  # (route id, service id, consumer id)
Chain = tuple[Plugin, ...]
EMPTY: Final[Chain] = ()


def _ref(entity: Mapping[str, Any], name: str) -> str | None:
    value = entity.get(name)
    return value.get("id") if isinstance(value, Mapping) else None


def precedence(route: str | None, service: str | None, consumer: str | None) -> list[Scope]:
    """The scopes to look in, most specific first (Kong's order)."""
    scopes: list[Scope] = []
    if consumer is not None:
        scopes += [(route, service, consumer), (route, None, consumer), (None, service, consumer)]
    scopes.append((route, service, None))
    if consumer is not None:
        scopes.append((None, None, consumer))
    scopes += [(route, None, None), (None, service, None), (None, None, None)]
    return scopes


class ConfigIndexes:
    """Lookups plugins share, built on first use for each config."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._by_field: dict[tuple[str, str], dict[Any, Mapping[str, Any]]] = {}
        self._grouped: dict[tuple[str, str], dict[Any, tuple[Mapping[str, Any], ...]]] = {}

    def of(self, kind: str) -> tuple[Mapping[str, Any], ...]:
        return self._config.of(kind)

    def by_field(self, kind: str, field_name: str) -> Mapping[Any, Mapping[str, Any]]:
        key = (kind, field_name)
        index = self._by_field.get(key)
        if index is None:
            index = {e[field_name]: e for e in self._config.of(kind) if e.get(field_name) is not None}
            self._by_field[key] = index
        return index

    def grouped(self, kind: str, field_name: str) -> Mapping[Any, tuple[Mapping[str, Any], ...]]:
        """Entities of ``kind`` by a field that many share; a foreign key groups by the id it
        references (``grouped("acls", "consumer")``: a consumer's groups)."""
        key = (kind, field_name)
        index = self._grouped.get(key)
        if index is None:
            lists: dict[Any, list[Mapping[str, Any]]] = {}
            for entity in self._config.of(kind):
                value = entity.get(field_name)
                if isinstance(value, Mapping):
                    value = value.get("id")
                if value is not None:
                    lists.setdefault(value, []).append(entity)
            index = {value: tuple(entities) for value, entities in lists.items()}
            self._grouped[key] = index
        return index

    def consumer(self, id_or_username: str) -> Mapping[str, Any] | None:
        return self.by_field("consumers", "id").get(id_or_username) or self.by_field(
            "consumers", "username"
        ).get(id_or_username)


class PluginSet:
    def __init__(self, config: Config, handlers: Mapping[str, type[Plugin]]) -> None:
        self.indexes = ConfigIndexes(config)
        self._scoped: dict[Scope, dict[str, Plugin]] = {}
        self._chains: dict[tuple[str | None, str | None, str | None, str], Chain] = {}
        missing: set[str] = set()
        for entity in config.of("plugins"):
            if not entity.get("enabled", True):
                continue
            handler = handlers.get(entity["name"])
            if handler is None:
                missing.add(entity["name"])
                continue
            scope = (_ref(entity, "route"), _ref(entity, "service"), _ref(entity, "consumer"))
            self._scoped.setdefault(scope, {})[entity["name"]] = handler(entity, self.indexes)
        if missing:
            # Valid configs may name bundled plugins whose handlers are not written yet.
            log.warning("plugins.not_implemented", plugins=sorted(missing))
        self.empty = not self._scoped
        self.consumer_scoped = any(scope[2] is not None for scope in self._scoped)

    @cached_property
    def services(self) -> Mapping[Any, Mapping[str, Any]]:
        """Service entities by id (what ``PluginContext.service`` is), as one attribute read."""
        return self.indexes.by_field("services", "id")

    def chain(self, route: str | None, service: str | None, consumer: str | None, protocol: str) -> Chain:
        key = (route, service, consumer, protocol)
        found = self._chains.get(key)
        if found is None:
            found = self._resolve(route, service, consumer, protocol)
            self._chains[key] = found
        return found

    def _resolve(self, route: str | None, service: str | None, consumer: str | None, protocol: str) -> Chain:
        chosen: dict[str, Plugin] = {}
        for scope in precedence(route, service, consumer):
            for name, plugin in self._scoped.get(scope, {}).items():
                if name not in chosen:
                    chosen[name] = plugin
        runnable = [p for p in chosen.values() if protocol in (p.entity.get("protocols") or (protocol,))]
        return tuple(sorted(runnable, key=lambda p: (-p.PRIORITY, p.NAME)))
