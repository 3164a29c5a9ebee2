"""proxy-cache's config (Kong's ``kong/plugins/proxy-cache/schema.lua``, 3.x): same fields,
defaults and bounds.

Choices where Zonegate differs:

- ``strategy`` is ``memory`` only, as in Kong's open-source plugin.
- ``memory.dictionary_name`` names the in-process store the entries go to (plugins naming the
  same one share it, as Kong's share a ``lua_shared_dict``); there is no nginx template, so any
  name is accepted where Kong refuses a dictionary its template does not declare.
"""

from __future__ import annotations

from typing import Final

from zonegate.core import fields as f

NAME: Final = "proxy-cache"

STRATEGIES: Final = ("memory",)
METHODS: Final = ("HEAD", "GET", "POST", "PATCH", "PUT")
DEFAULT_DICTIONARY: Final = "kong_db_cache"
# The diagnostic headers ``response_headers`` switches, by their config names.
AGE: Final = "age"
STATUS_HEADER: Final = "X-Cache-Status"
KEY_HEADER: Final = "X-Cache-Key"


def _switch(header: str) -> tuple[str, f.Field]:
    return (header, f.boolean(default=True, description=f"Send the {header} header."))


CONFIG: Final = f.record(
    (
        "response_code",
        f.array(
            f.integer(f.between(100, 900)),
            required=True,
            default=[200, 301, 404],
            len_min=1,
            description="Upstream response status codes considered cacheable.",
        ),
    ),
    (
        "request_method",
        f.array(
            f.string(f.one_of(*METHODS)),
            required=True,
            default=["GET", "HEAD"],
            description="Downstream request methods considered cacheable.",
        ),
    ),
    (
        "content_type",
        f.array(
            f.string(),
            required=True,
            default=["text/plain", "application/json"],
            description="Upstream response content types considered cacheable: type, subtype and "
            "parameters must all match (type/* and */* match any subtype or type).",
        ),
    ),
    ("cache_ttl", f.integer(f.gt(0), default=300, description="TTL, in seconds, of cache entities.")),
    (
        "strategy",
        f.string(
            f.one_of(*STRATEGIES),
            required=True,
            description="The backing data store in which to hold cache entities: memory.",
        ),
    ),
    (
        "cache_control",
        f.boolean(
            required=True,
            default=False,
            description="Respect the Cache-Control behaviors of RFC 7234 (RFC 9111).",
        ),
    ),
    (
        "ignore_uri_case",
        f.boolean(default=False, description="Treat request paths that differ only in case as one."),
    ),
    (
        "storage_ttl",
        f.integer(
            description="Seconds to keep entities in the store, independent of cache_ttl or the "
            "TTL from Cache-Control (0: until evicted)."
        ),
    ),
    (
        "memory",
        f.record(
            (
                "dictionary_name",
                f.string(
                    required=True,
                    default=DEFAULT_DICTIONARY,
                    description="The in-memory store that holds the entities of the memory strategy.",
                ),
            ),
            default={},
            description="Settings of the memory strategy.",
        ),
    ),
    (
        "vary_query_params",
        f.array(
            f.string(),
            description="Query parameters considered for the cache key; when unset, all of them.",
        ),
    ),
    (
        "vary_headers",
        f.array(
            f.string(),
            description="Request headers considered for the cache key; when unset, none of them.",
        ),
    ),
    (
        "response_headers",
        f.record(
            _switch(AGE),
            _switch(STATUS_HEADER),
            _switch(KEY_HEADER),
            default={},
            description="Caching related diagnostic headers to include in responses.",
        ),
    ),
    required=True,
    default={},
)
