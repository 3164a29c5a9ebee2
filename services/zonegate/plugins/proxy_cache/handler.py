"""proxy-cache's handler (Kong's ``handler.lua``), memory strategy.

Access: a request whose method is not cacheable is a ``Bypass``; else its cache key is computed
and looked up. A fresh entry is a ``Hit``: answered from memory as a plugin exit, the upstream
never contacted (plugins of higher priority, authentication first, have run already). No entry
is a ``Miss``, an entry the request cannot take a ``Refresh``; both go upstream and mark the
request. Response phase: a marked response whose status, content type and (with
``cache_control``) Cache-Control allow it has its headers kept and its body held (``Bypass``
otherwise); body phase: the whole body is stored. A body larger than the proxy's buffer is
streamed untouched and not stored; a response that has no body (HEAD, 204, 304) is stored at
once.

Diagnostic headers (``X-Cache-Status``, ``X-Cache-Key``, ``Age``) follow ``response_headers``;
a request with a ``Kong-Debug`` header gets them all, as in Kong.

With ``cache_control``, where Kong's code and RFC 9111 part ways, this follows the RFC:

- a request's ``no-cache`` is a ``Refresh`` (go upstream, store what comes back) where Kong
  bypasses the cache; ``no-store`` bypasses it, as in Kong;
- an entry past its freshness lifetime (kept by ``storage_ttl``) is served only to a request
  whose ``max-stale`` allows it, where Kong serves it unless ``max-age``/``min-fresh`` refuse;
- a response to a request with ``Authorization`` is stored only if it says ``public``,
  ``s-maxage`` or ``must-revalidate``, unless a consumer is authenticated (its entries are its
  own); Kong means to bypass such requests but reads a variable nginx never sets.

On a hit, headers this request already carries from plugins that ran before (rate-limiting's
counters) keep their fresh values, where Kong only protects ``*ratelimit-remaining*``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from zonegate import __version__
from zonegate.plugins.api import Exit, Plugin, PluginContext, SharedIndexes
from zonegate.plugins.proxy_cache import cache_key, memory_store
from zonegate.plugins.proxy_cache.cache_control import (
    EMPTY,
    ContentTypes,
    Directives,
    delta_seconds,
    parse_directives,
    resource_ttl,
    shareable,
)
from zonegate.plugins.proxy_cache.memory_store import CachedResponse
from zonegate.plugins.proxy_cache.schema import AGE, KEY_HEADER, STATUS_HEADER

DEBUG_HEADER: Final = "Kong-Debug"
HEADER_NAMES: Final = {AGE: "Age", STATUS_HEADER: STATUS_HEADER, KEY_HEADER: KEY_HEADER}
# Never replayed from an entry: framing and hop-by-hop (Kong's list), the proxy's own Server,
# and the diagnostics, which each answer gets anew.
NOT_STORED: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "server",
        "age",
        "x-cache-status",
        "x-cache-key",
    }
)
NO_BODY_STATUSES: Final = frozenset({204, 304})


@dataclass(slots=True)
class _Pending:
    """A Miss or Refresh on its way upstream: what the later phases need to store the answer."""

    key: str
    debug: bool
    authorized: bool  # the request carried Authorization and no consumer scopes the key
    ttl: float = 0.0
    headers: tuple[tuple[str, str], ...] | None = None  # set once the response is cacheable


def stored_headers(items: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name, value in items if name.lower() not in NOT_STORED)


def replayed_headers(response: CachedResponse, fresh: set[str]) -> dict[str, list[str]]:
    """An entry's headers for its exit, grouped by name, less those this request already has
    fresh values for and Kong's ``ratelimit-remaining`` ones."""
    grouped: dict[str, list[str]] = {}
    for name, value in response.headers:
        lowered = name.lower()
        if lowered in fresh or "ratelimit-remaining" in lowered:
            continue
        grouped.setdefault(name, []).append(value)
    return grouped


def refused(response: CachedResponse, directives: Directives, now: float) -> bool:
    """With ``cache_control``: the request's Cache-Control does not take this entry."""
    if "no-cache" in directives:
        return True
    age = response.age(now)
    max_age = delta_seconds(directives, "max-age")
    if max_age is not None and age > max_age:
        return True
    min_fresh = delta_seconds(directives, "min-fresh")
    if min_fresh is not None and response.ttl - age < min_fresh:
        return True
    if age > response.ttl:  # stale: only for a request that accepts this much staleness
        if "max-stale" not in directives:
            return True
        max_stale = delta_seconds(directives, "max-stale")
        if directives["max-stale"] is not None and (max_stale is None or age - response.ttl > max_stale):
            return True
    return False


class ProxyCache(Plugin):
    NAME = "proxy-cache"
    PRIORITY = 100
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        config = self.config
        self.methods = frozenset(config["request_method"])
        self.codes = frozenset(config["response_code"])
        self.content_types = ContentTypes(config["content_type"])
        self.cache_ttl = float(config.get("cache_ttl") or 300)
        self.storage_ttl: int | None = config.get("storage_ttl")
        self.cache_control = bool(config["cache_control"])
        self.ignore_uri_case = bool(config.get("ignore_uri_case"))
        self.vary_query_params: tuple[str, ...] = tuple(config.get("vary_query_params") or ())
        self.vary_headers: tuple[str, ...] = tuple(config.get("vary_headers") or ())
        shown: Mapping[str, Any] = config.get("response_headers") or {}
        self.shown = {name: shown.get(name) is not False for name in HEADER_NAMES}
        self.store = memory_store.named((config.get("memory") or {}).get("dictionary_name") or "")
        self.slot = f"proxy-cache:{self.id}"  # this instance's per-request state in ctx.shared

    # -- phases -----------------------------------------------------------------------------------

    def access(self, ctx: PluginContext) -> Exit | None:
        directives = parse_directives(ctx.header_values("Cache-Control")) if self.cache_control else EMPTY
        debug = ctx.header(DEBUG_HEADER) is not None
        if ctx.method not in self.methods or "no-store" in directives:
            self._show(ctx, STATUS_HEADER, "Bypass", debug)
            return None
        key = self.key(ctx)
        self._show(ctx, KEY_HEADER, key, debug)
        now = time.monotonic()
        cached = self.store.get(key, now)
        if cached is None:
            if "only-if-cached" in directives:
                return Exit(504)  # RFC 9111 section 5.2.1.7, as Kong
            self._pass(ctx, key, "Miss", debug)
            return None
        stale = refused(cached, directives, now) if self.cache_control else cached.age(now) > self.cache_ttl
        if stale:
            self._pass(ctx, key, "Refresh", debug)
            return None
        return self._hit(ctx, key, cached, now, debug)

    def response(self, ctx: PluginContext) -> None:
        pending = ctx.shared.get(self.slot)
        if not isinstance(pending, _Pending) or pending.headers is not None:
            return
        ttl = self._fresh_for(ctx, pending)
        if ttl is None:
            del ctx.shared[self.slot]
            self._show(ctx, STATUS_HEADER, "Bypass", pending.debug)
            return
        pending.ttl = ttl
        pending.headers = stored_headers(ctx.response_header_items())
        status = ctx.response_status
        if ctx.method == "HEAD" or status in NO_BODY_STATUSES or status < 200:
            del ctx.shared[self.slot]
            self._store(ctx, pending, b"")  # the body phase never runs without a body
        else:
            ctx.buffer_response_body()

    def body(self, ctx: PluginContext, body: bytes) -> bytes:
        pending = ctx.shared.pop(self.slot, None)
        if isinstance(pending, _Pending) and pending.headers is not None:
            self._store(ctx, pending, body)
        return body

    # -- helpers ----------------------------------------------------------------------------------

    def key(self, ctx: PluginContext) -> str:
        uri = ctx.path.lower() if self.ignore_uri_case else ctx.path
        args = cache_key.query_args(ctx.request.query_bytes.decode("latin-1"))
        return cache_key.build(
            (ctx.consumer or {}).get("id"),
            ctx.route.get("id"),
            ctx.method,
            uri,
            cache_key.params_part(args, self.vary_query_params),
            cache_key.vary_part(self.vary_headers, ctx.header_values),
        )

    def _show(self, ctx: PluginContext, header: str, value: str, debug: bool) -> None:
        if debug or self.shown[header]:
            ctx.set_response_header(HEADER_NAMES[header], value)

    def _pass(self, ctx: PluginContext, key: str, status: str, debug: bool) -> None:
        authorized = ctx.consumer is None and ctx.header("Authorization") is not None
        ctx.shared[self.slot] = _Pending(key, debug, authorized)
        self._show(ctx, STATUS_HEADER, status, debug)

    def _hit(self, ctx: PluginContext, key: str, cached: CachedResponse, now: float, debug: bool) -> Exit:
        # Set by plugins that ran before this one, for this request: theirs win over the entry's.
        fresh = {name.lower() for name, _ in ctx.response_header_items()}
        headers: dict[str, str | Sequence[str]] = dict(replayed_headers(cached, fresh))
        for header, value in ((AGE, str(int(cached.age(now)))), (STATUS_HEADER, "Hit"), (KEY_HEADER, key)):
            if debug or self.shown[header]:
                headers[HEADER_NAMES[header]] = value
        return Exit(cached.status, body=cached.body, headers=headers)

    def _fresh_for(self, ctx: PluginContext, pending: _Pending) -> float | None:
        """How long this response stays fresh, or None when it is not to be cached."""
        if ctx.response_status not in self.codes:
            return None
        content_types = ctx.response_header_values("Content-Type")
        if len(content_types) != 1 or not self.content_types.match(content_types[0]):
            return None
        if not self.cache_control:
            return self.cache_ttl
        directives = parse_directives(ctx.response_header_values("Cache-Control"))
        if "private" in directives or "no-store" in directives or "no-cache" in directives:
            return None
        if pending.authorized and not shareable(directives):
            return None
        # Expires is a wall-clock date; the store itself keeps monotonic time.
        ttl = resource_ttl(directives, ctx.response_header_values("Expires"), time.time())
        return ttl if ttl > 0 else None

    def _store(self, ctx: PluginContext, pending: _Pending, body: bytes) -> None:
        assert pending.headers is not None
        if self.storage_ttl is not None:
            keep: float = self.storage_ttl
        else:
            keep = pending.ttl if self.cache_control else self.cache_ttl
        if keep < 0:
            return
        now = time.monotonic()
        entry = CachedResponse(ctx.response_status, pending.headers, body, now, pending.ttl)
        self.store.put(pending.key, entry, keep if keep > 0 else None, now)
