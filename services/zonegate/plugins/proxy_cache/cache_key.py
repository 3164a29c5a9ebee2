"""The cache key (Kong's ``cache_key.lua``): sha256 of
``prefix|method|uri|params|headers``, hex.

- prefix: ``consumer id:route id`` when a consumer is authenticated, else the route id
  (``default`` without a route), so a consumer's entries are its own;
- uri: the request path as the client sent it, without the query (lower-cased with
  ``ignore_uri_case``); Kong takes nginx's request line here, so the key values differ from
  Kong's while the rules are the same;
- params: ``name=value`` pairs joined with ``:``: the ``vary_query_params`` in their order, or
  every parameter sorted by name when none are configured; a parameter without ``=`` is its bare
  name, a repeated one ``name=v1,v2`` with the values sorted;
- headers: the same over ``vary_headers`` (none when unset), looked up case-insensitively and
  written with the configured spelling.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import unquote_plus

Values = Sequence[str | None]  # None: a query parameter without "="


def query_args(raw: str) -> dict[str, list[str | None]]:
    """The query string as Kong's ``get_query`` reads it: decoded, repeats kept in order."""
    found: dict[str, list[str | None]] = {}
    for part in raw.split("&"):
        if not part:
            continue
        name, equals, value = part.partition("=")
        found.setdefault(unquote_plus(name), []).append(unquote_plus(value) if equals else None)
    return found


def _pair(name: str, values: Values) -> str:
    if len(values) == 1:
        value = values[0]
        return name if value is None else f"{name}={value}"
    return f"{name}=" + ",".join(sorted(value or "" for value in values))


def vary_part(fields: Sequence[str], lookup: Callable[[str], Values]) -> str:
    """``name=value`` for each field that has a value, in the order given, joined with ``:``."""
    pairs = []
    for name in fields:
        values = lookup(name)
        if values:
            pairs.append(_pair(name, values))
    return ":".join(pairs)


def params_part(args: Mapping[str, Values], vary_query_params: Sequence[str]) -> str:
    fields = vary_query_params or sorted(args)
    return vary_part(fields, lambda name: args.get(name, ()))


def prefix(consumer_id: str | None, route_id: str | None) -> str:
    if route_id is None:
        return "default"
    return f"{consumer_id}:{route_id}" if consumer_id is not None else route_id


def build(
    consumer_id: str | None,
    route_id: str | None,
    method: str,
    uri: str,
    params: str,
    headers: str,
) -> str:
    text = f"{prefix(consumer_id, route_id)}|{method}|{uri}|{params}|{headers}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
