"""What a plugin sees and does: the per-request context and the base class (Kong's PDK, small).

A plugin class declares ``NAME``, ``PRIORITY`` (Kong's values, so the order matches Kong's) and
``VERSION``, and defines only the phases it uses:

- ``access(ctx)``: after routing, before the upstream is picked. Returns ``None`` to go on, an
  ``Exit`` to answer the client itself (short-circuit), or an awaitable of either when it must
  wait on I/O (the proxy pauses that request only).
- ``response(ctx)``: when the upstream's response head is in; may change ``ctx.response_status``
  and ``ctx.response_headers`` before they go to the client.
- ``log(ctx)``: after the response is complete; must not block (queue, then send elsewhere).
- ``init_worker(settings)`` (classmethod): once per proxy process, before it serves.

One instance per plugin entity, built when a config is applied (``__init__`` gets the validated
entity, ``config`` with Kong's defaults filled), so per-instance state lives on ``self`` and a
request does no setup. The context object exists only for requests whose chain is not empty.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qs, urlencode

from zonegate.settings import Settings


@dataclass(frozen=True, slots=True)
class Exit:
    """Answer the client now. ``message``: Kong's error body ``{"message": ..., "request_id": ...}``
    (``kong.response.error``); ``json``: that document as it is (``kong.response.exit`` with a
    table); ``body``: these bytes with ``content_type``; none of them: an empty body."""

    status: int
    message: str | None = None
    json: Mapping[str, Any] | None = None
    body: bytes | None = None
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


AccessResult = Exit | None | Awaitable[Exit | None]


class RequestView(Protocol):
    """What the proxy exposes of a request to plugins (implemented by the exchange's adapter)."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def scheme(self) -> str: ...

    @property
    def client_ip(self) -> str: ...

    @property
    def request_id(self) -> str: ...

    query_bytes: bytes  # settable: a plugin may rewrite the query sent upstream

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The request headers as they will go upstream (mutable in place)."""
        ...


class PluginContext:
    """Per-request state shared by the plugins of one chain (Kong's ``kong.ctx`` and PDK calls)."""

    __slots__ = (
        "_query",
        "authenticated_groups",
        "consumer",
        "credential",
        "query_changed",
        "request",
        "response_headers",
        "response_status",
        "route",
        "service",
        "shared",
    )

    def __init__(
        self, request: RequestView, route: Mapping[str, Any], service: Mapping[str, Any] | None
    ) -> None:
        self.request = request
        self.route = route
        self.service = service
        self.consumer: Mapping[str, Any] | None = None
        self.credential: Mapping[str, Any] | None = None
        self.authenticated_groups: list[str] | None = None
        self.shared: dict[str, Any] = {}
        # Headers plugins add to the client's response (rate-limit headers set during access...).
        self.response_headers: list[tuple[str, str]] = []
        self.response_status = 0
        self.query_changed = False
        self._query: dict[str, list[str]] | None = None

    # -- request ------------------------------------------------------------------------------

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def path(self) -> str:
        return self.request.path

    @property
    def client_ip(self) -> str:
        return self.request.client_ip

    def header(self, name: str) -> str | None:
        """The first value of a request header (case-insensitive), as Kong's ``get_header``."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.request.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self.request.headers if k.lower() == wanted]

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = parse_qs(self.request.query_bytes.decode("latin-1"), keep_blank_values=True)
        return self._query

    # -- the request that goes upstream --------------------------------------------------------

    def set_header(self, name: str, value: str) -> None:
        self.clear_header(name)
        self.request.headers.append((name.encode("latin-1"), value.encode("latin-1")))

    def add_header(self, name: str, value: str) -> None:
        self.request.headers.append((name.encode("latin-1"), value.encode("latin-1")))

    def clear_header(self, name: str) -> None:
        wanted = name.lower().encode("latin-1")
        self.request.headers[:] = [(k, v) for k, v in self.request.headers if k.lower() != wanted]

    def set_query(self, query: Mapping[str, list[str]]) -> None:
        self._query = {k: list(v) for k, v in query.items()}
        self.request.query_bytes = urlencode(self._query, doseq=True).encode("latin-1")
        self.query_changed = True

    # -- identity -------------------------------------------------------------------------------

    def authenticate(self, consumer: Mapping[str, Any] | None, credential: Mapping[str, Any] | None) -> None:
        """Kong's ``kong.client.authenticate``: later plugins see the consumer; the chain is looked
        up again for it, so consumer-scoped plugin instances apply from here on."""
        self.consumer = consumer
        self.credential = credential

    # -- the response to the client -------------------------------------------------------------

    def set_response_header(self, name: str, value: str) -> None:
        lowered = name.lower()
        self.response_headers = [(k, v) for k, v in self.response_headers if k.lower() != lowered]
        self.response_headers.append((name, value))


class Plugin:
    """Base class of plugin handlers; subclasses set the class attributes and their phases."""

    NAME: ClassVar[str]
    PRIORITY: ClassVar[int]
    VERSION: ClassVar[str]

    def __init__(self, entity: Mapping[str, Any], shared: SharedIndexes) -> None:
        self.entity = entity
        self.id: str = entity["id"]
        self.config: Mapping[str, Any] = entity.get("config") or {}
        self.configure(shared)

    def configure(self, shared: SharedIndexes) -> None:
        """Precompute what requests need (compiled patterns, lookups); runs at apply time."""

    @classmethod
    def init_worker(cls, settings: Settings) -> None:
        """Once per proxy process, before it serves (Kong's ``init_worker``): connections or
        state a plugin keeps across configs (e.g. a bus client for cluster-wide counters)."""


class SharedIndexes(Protocol):
    """Lookups over the whole config that plugins share (built once per config, on demand)."""

    def consumer(self, id_or_username: str) -> Mapping[str, Any] | None: ...

    def by_field(self, kind: str, field_name: str) -> Mapping[Any, Mapping[str, Any]]: ...

    def of(self, kind: str) -> tuple[Mapping[str, Any], ...]: ...
