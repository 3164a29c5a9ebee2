"""key-auth's handler: find the key, find its credential and consumer, or answer 401 (Kong's texts).

Credentials come from the applied config (``keyauth_credentials``, indexed by key once per
config), so a lookup is one dict access. A credential whose ``ttl`` has run out since it was
created is refused, on data planes too (Kong fixed that only in 3.4).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from zonegate import __version__
from zonegate.plugins.api import AccessResult, Exit, Plugin, PluginContext, SharedIndexes
from zonegate.plugins.consumer_headers import EncodedHeaders, set_consumer_headers

NO_KEY: Final = "No API key found in request"
INVALID: Final = "Invalid authentication credentials"
DUPLICATE: Final = "Duplicate API key found"


def expired(credential: Mapping[str, Any], now: float, loaded_at: float) -> bool:
    """``ttl`` counts from the credential's creation; a declarative file carries no timestamps,
    so there it counts from when the config was loaded (Kong's DB-less behaviour)."""
    ttl = credential.get("ttl")
    if not ttl:
        return False
    created = credential.get("created_at")
    start = float(created) if created is not None else loaded_at
    return now >= start + float(ttl)


class KeyAuth(Plugin):
    NAME = "key-auth"
    PRIORITY = 1250
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        self.credentials = shared.by_field("keyauth_credentials", "key")
        self.consumers = shared.by_field("consumers", "id")
        self.shared = shared
        self.loaded_at = time.time()
        # Kong 3.x: "Key" alone unless a realm is configured.
        realm = self.config.get("realm")
        self.realm = f'Key realm="{realm}"' if realm else "Key"
        # The config as each request reads it.
        self.key_names: tuple[str, ...] = tuple(self.config["key_names"])
        self.in_header: bool = self.config["key_in_header"]
        self.in_query: bool = self.config["key_in_query"]
        self.hide_credentials: bool = self.config["hide_credentials"]
        self.consumer_headers: dict[tuple[Any, Any], EncodedHeaders] = {}

    def access(self, ctx: PluginContext) -> AccessResult:
        config = self.config
        if not config["run_on_preflight"] and ctx.method == "OPTIONS":
            return None
        if config.get("anonymous") and ctx.credential is not None:
            return None  # an earlier auth plugin already authenticated: logical OR
        failure = self._authenticate(ctx)
        if failure is None:
            return None
        anonymous = config.get("anonymous")
        if anonymous:
            consumer = self.shared.consumer(anonymous)
            if consumer is None:
                return Exit(500, f"anonymous consumer {anonymous} is configured but doesn't exist")
            set_consumer_headers(ctx, consumer, None)
            return None
        return failure

    def _authenticate(self, ctx: PluginContext) -> Exit | None:
        key: str | None = None
        for name in self.key_names:
            values = ctx.header_values(name) if self.in_header else []
            if not values and self.in_query:
                values = ctx.query.get(name, [])
            if len(values) > 1:
                return Exit(401, DUPLICATE)
            if values:
                key = values[0]
                if self.hide_credentials:
                    ctx.clear_header(name)
                    if name in ctx.query:
                        ctx.set_query({k: v for k, v in ctx.query.items() if k != name})
                break
        if not key:
            return Exit(401, NO_KEY, headers={"WWW-Authenticate": self.realm})
        credential = self.credentials.get(key)
        if credential is None or (credential.get("ttl") and expired(credential, time.time(), self.loaded_at)):
            return Exit(401, INVALID)
        consumer_id = credential["consumer"]["id"]
        # ``shared.consumer`` looks up by id, then by username: the first is one dict access.
        consumer = self.consumers.get(consumer_id) or self.shared.consumer(consumer_id)
        if consumer is None:
            return Exit(401, INVALID)
        set_consumer_headers(ctx, consumer, credential, kept=self.consumer_headers)
        return None
