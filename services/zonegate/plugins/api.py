"""What a plugin sees and does: the per-request context and the base class (Kong's PDK, small).

A plugin class declares ``NAME``, ``PRIORITY`` (Kong's values, so the order matches Kong's) and
``VERSION``, and defines only the phases it uses:

- ``access(ctx)``: after routing, before the upstream is picked. Returns ``None`` to go on, an
  ``Exit`` to answer the client itself (short-circuit), or an awaitable of either when it must
  wait on I/O (the proxy pauses that request only).
- ``response(ctx)``: when the response head is known (the upstream's, or one the proxy or a plugin
  answers itself, as Kong's ``header_filter`` runs on ``kong.response.exit`` and on proxy errors
  too); may change ``ctx.response_status`` and the headers (``ctx.set_response_header``,
  ``add_response_header``, ``clear_response_header``) before they go to the client. A plugin that
  needs the whole body calls ``ctx.buffer_response_body()`` here.
- ``body(ctx, body) -> bytes``: the whole response body, when a response phase asked for it;
  returns the body to send (the proxy fixes ``Content-Length``). Bodies larger than the buffer
  limit are streamed untouched instead, and this phase does not run.
- ``log(ctx)``: after the response is complete; must not block (queue, then send elsewhere).
- ``init_worker(settings)`` (classmethod): once per proxy process, before it serves.

One instance per plugin entity, built when a config is applied (``__init__`` gets the validated
entity, ``config`` with Kong's defaults filled), so per-instance state lives on ``self`` and a
request does no setup. The context object exists only for requests whose chain is not empty.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Protocol
from urllib.parse import parse_qs, urlencode

from mypy_extensions import mypyc_attr

from zonegate.settings import Settings

# Framing is the proxy's business on each side: plugins cannot set these on a response.
_FRAMING_NAMES: Final = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"te", b"trailer", b"upgrade"}
)
# A value may come from the client (a template, a query argument): it must not end the header
# line. Escaped as OpenResty escapes them, so the header keeps a value.
_UNSAFE: Final = str.maketrans({"\r": "%0D", "\n": "%0A", "\0": "%00"})


def encode_header(text: str) -> bytes:
    """Header bytes: latin-1 as HTTP/1.1 has it, UTF-8 for what latin-1 cannot carry; CR, LF and
    NUL escaped."""
    # str.translate with multi-character replacements goes character by character (about 1 us
    # for a 30-character header name); three ``in`` scans are C loops, and values rarely need it.
    if "\r" in text or "\n" in text or "\0" in text:
        text = text.translate(_UNSAFE)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


# Header names come from code and configs: few, and the same on every request. Their encodings
# are kept (up to a bound, in case a plugin derives names from requests).
_NAMES_KEPT: Final = 2048
_encoded_names: dict[str, bytes] = {}
_lowered_names: dict[str, bytes] = {}


def _encode_name(name: str) -> bytes:
    """``encode_header(name)``, remembered."""
    encoded = _encoded_names.get(name)
    if encoded is None:
        encoded = encode_header(name)
        if len(_encoded_names) < _NAMES_KEPT:
            _encoded_names[name] = encoded
    return encoded


def _lowered_name(name: str) -> bytes:
    """``name.lower().encode("latin-1")`` (raising as it does), remembered: what request and
    response header names are compared with."""
    lowered = _lowered_names.get(name)
    if lowered is None:
        lowered = name.lower().encode("latin-1")
        if len(_lowered_names) < _NAMES_KEPT:
            _lowered_names[name] = lowered
    return lowered


@dataclass(frozen=True, slots=True)
class Exit:
    """Answer the client now. ``message``: Kong's error body ``{"message": ..., "request_id": ...}``
    (``kong.response.error``); ``json``: that document as it is (``kong.response.exit`` with a
    table); ``body``: these bytes with ``content_type``; none of them: an empty body.
    ``headers``: a list of values sends the header once per value (as Kong's exit takes tables)."""

    status: int
    message: str | None = None
    json: Mapping[str, Any] | None = None
    body: bytes | None = None
    content_type: str | None = None
    headers: Mapping[str, str | Sequence[str]] = field(default_factory=dict)


AccessResult = Exit | None | Awaitable[Exit | None]


@dataclass(frozen=True, slots=True)
class ExchangeSummary:
    """What happened to an exchange, for tracing plugins: a few scalars, no header copies (unlike
    ``serialize()``). Times are ``time.monotonic()`` seconds."""

    http_version: str  # "1.1" or "1.0"
    host: str  # as the client sent it (Host header or absolute-form target); "" when absent
    target: str  # the request target as received, path and query (Kong's ``request_uri``)
    status: int  # as sent to the client; 499 when the client left first
    started: float  # when the request head arrived
    upstream_status: int  # what the upstream answered; 0 when none did
    upstream_address: tuple[str, int] | None  # the last upstream address tried (ip or name, port)
    tries: int  # connection attempts to upstreams (0: the request never left)


@dataclass(frozen=True, slots=True)
class ExchangeMeasures:
    """The numbers of a finished exchange as ``serialize()`` reports them (Kong's sizes, latencies
    in ms with -1 for "no upstream", the response's source), without building the whole entry:
    for metrics plugins, which need nothing else."""

    status: int
    source: str  # "service" when an upstream answered, else "kong"
    request_size: int
    response_size: int
    request_ms: int
    proxy_ms: int
    kong_ms: int


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

    @property
    def uri_captures(self) -> Mapping[str, str]:
        """Named groups of the regex path that matched (Kong's ``uri_captures`` by name)."""
        ...

    @property
    def uri_groups(self) -> tuple[str, ...]:
        """Numbered groups of that regex, in order (Kong's ``uri_captures[1]``...)."""
        ...

    def set_method(self, method: str) -> None:
        """The method sent upstream (Kong's ``kong.service.request.set_method``)."""
        ...

    def set_upstream_path(self, path: str) -> None:
        """The path sent upstream, replacing the routed one (``kong.service.request.set_path``)."""
        ...

    def set_upstream_host(self, host: str) -> None:
        """The ``Host`` header sent upstream (``kong.service.request.set_header("Host", ...)``)."""
        ...

    @property
    def body_bytes(self) -> int:
        """Request body bytes received so far."""
        ...

    @property
    def body_ready(self) -> bool:
        """The body is complete, or will never be held whole (too large, or already streaming)."""
        ...

    def body(self) -> bytes | None:
        """The whole request body once ``body_ready``; ``None`` when it is not held whole."""
        ...

    def wait_body(self) -> Awaitable[bytes | None]:
        """Read the rest of the body (answering ``Expect: 100-continue``), then ``body()``."""
        ...

    def set_body(self, body: bytes) -> None:
        """Replace the body sent upstream (only a body that is held whole)."""
        ...

    def limit_body(self, max_bytes: int) -> bool:
        """Answer 413 once more than ``max_bytes`` arrive; True when this limit is the strictest."""
        ...

    def serialize(self) -> dict[str, Any]:
        """Kong's ``kong.log.serialize()`` of the finished exchange (for log phases)."""
        ...

    def measures(self) -> ExchangeMeasures:
        """``serialize()``'s sizes, latencies, status and source, computed alone."""
        ...

    def summary(self) -> ExchangeSummary:
        """Timings, statuses and the upstream of the exchange so far (cheap; for log phases)."""
        ...


class PluginContext:
    """Per-request state shared by the plugins of one chain (Kong's ``kong.ctx`` and PDK calls)."""

    __slots__ = (
        "_log_entry",
        "_query",
        "_response_list",
        "_waiting_names",
        "authenticated_groups",
        "body_limit_status",
        "body_wanted",
        "consumer",
        "credential",
        "query_changed",
        "request",
        "response_headers",
        "response_ran",
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
        # Headers plugins add to the client's response (rate-limit headers set during access...),
        # encoded as sent, and their names lowered: no scan to find one.
        self.response_headers: list[tuple[bytes, bytes]] = []
        self._waiting_names: set[bytes] = set()
        self.response_status = 0
        self.query_changed = False
        self._query: dict[str, list[str]] | None = None
        self._log_entry: dict[str, Any] | None = None
        # Set by the proxy when the response phase starts: the headers that go to the client.
        self._response_list: list[tuple[bytes, bytes]] | None = None
        self.response_ran = False
        self.body_wanted = False
        self.body_limit_status = 413

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
        wanted = _lowered_name(name)
        for key, value in self.request.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def header_values(self, name: str) -> list[str]:
        wanted = _lowered_name(name)
        values = []
        for key, value in self.request.headers:
            if key.lower() == wanted:
                values.append(value.decode("latin-1"))
        return values

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = parse_qs(self.request.query_bytes.decode("latin-1"), keep_blank_values=True)
        return self._query

    # -- the request that goes upstream --------------------------------------------------------

    def set_header(self, name: str, value: str) -> None:
        if name.lower() == "host":
            self.request.set_upstream_host(value)  # the proxy writes Host itself
            return
        self.clear_header(name)
        self.request.headers.append((_encode_name(name), encode_header(value)))

    def add_header(self, name: str, value: str) -> None:
        self.request.headers.append((_encode_name(name), encode_header(value)))

    def replace_headers(self, names: Iterable[str], values: Iterable[tuple[str, str]]) -> None:
        """Clear every header in ``names``, then add ``values``: one pass over the request headers,
        where a set/clear per header is one pass each (an auth plugin sets five per request)."""
        wanted = frozenset(_lowered_name(name) for name in names)
        self.replace_encoded_headers(
            wanted, [(_encode_name(name), encode_header(value)) for name, value in values]
        )

    def replace_encoded_headers(
        self, lowered: frozenset[bytes], headers: Iterable[tuple[bytes, bytes]]
    ) -> None:
        """``replace_headers`` with the names to clear lowered and the headers to add encoded as
        sent (see ``encode_header``): for a plugin that sends the same ones on many requests."""
        current = self.request.headers
        for key, _ in current:  # the client rarely sends any of them: rebuild only when it does
            if key.lower() in lowered:
                current[:] = [(k, v) for k, v in current if k.lower() not in lowered]
                break
        current.extend(headers)

    def clear_header(self, name: str) -> None:
        wanted = _lowered_name(name)
        self.request.headers[:] = [(k, v) for k, v in self.request.headers if k.lower() != wanted]

    def set_query(self, query: Mapping[str, list[str]]) -> None:
        self._query = {k: list(v) for k, v in query.items()}
        self.request.query_bytes = urlencode(self._query, doseq=True).encode("latin-1")
        self.query_changed = True

    def set_raw_query(self, query: bytes) -> None:
        """The query string sent upstream, already encoded (without the ``?``)."""
        self.request.query_bytes = query
        self._query = None
        self.query_changed = True

    def set_method(self, method: str) -> None:
        self.request.set_method(method)

    def set_path(self, path: str) -> None:
        self.request.set_upstream_path(path)

    # -- the request body ------------------------------------------------------------------------

    @property
    def body_ready(self) -> bool:
        return self.request.body_ready

    def body(self) -> bytes | None:
        return self.request.body()

    def wait_body(self) -> Awaitable[bytes | None]:
        """Await this in an async access phase: the rest of the body is read first (Kong's
        ``kong.request.get_raw_body``); ``None`` when it is larger than the proxy buffers."""
        return self.request.wait_body()

    def set_body(self, body: bytes) -> None:
        self.request.set_body(body)

    def limit_request_body(self, max_bytes: int, status: int = 413) -> bool:
        """Answer ``status`` with Kong's "Request size limit exceeded" as soon as the body grows
        past ``max_bytes`` (counted while it streams). False when it already has."""
        if self.request.limit_body(max_bytes):
            self.body_limit_status = status
        return self.request.body_bytes <= max_bytes

    # -- identity -------------------------------------------------------------------------------

    def authenticate(self, consumer: Mapping[str, Any] | None, credential: Mapping[str, Any] | None) -> None:
        """Kong's ``kong.client.authenticate``: later plugins see the consumer; the chain is looked
        up again for it, so consumer-scoped plugin instances apply from here on."""
        self.consumer = consumer
        self.credential = credential

    # -- the response to the client -------------------------------------------------------------

    # Before the response phase, headers set here wait in ``response_headers`` (encoded as they
    # will be sent, with their lowered names in ``_waiting_names``) and replace the response's own
    # of the same name; from the response phase on, the calls below edit the very list of
    # headers that goes to the client.

    def set_response_header(self, name: str, value: str) -> None:
        lowered = _lowered_name(name)
        headers = self._response_list
        if headers is None:
            self._wait_response_header(lowered, _encode_name(name), encode_header(value))
            return
        if lowered in _FRAMING_NAMES:
            return
        headers[:] = [(k, v) for k, v in headers if k.lower() != lowered]
        headers.append((_encode_name(name), encode_header(value)))

    def set_response_headers(self, headers: Iterable[tuple[str, str]]) -> None:
        """``set_response_header`` for each, in order: one call for a plugin that sets several."""
        if self._response_list is not None:
            for name, value in headers:
                self.set_response_header(name, value)
            return
        for name, value in headers:
            self._wait_response_header(_lowered_name(name), _encode_name(name), encode_header(value))

    def set_encoded_response_headers(
        self, headers: Sequence[tuple[bytes, bytes]], lowered: Sequence[bytes]
    ) -> None:
        """``set_response_headers`` with names and values already encoded (``lowered[i]`` is
        ``headers[i]``'s name in lower case, no CR/LF in any): for a plugin that sets the same
        names on every request and can keep their encodings."""
        if self._response_list is not None:
            for name, value in headers:
                self.set_response_header(name.decode("latin-1"), value.decode("latin-1"))
            return
        for index, (name, value) in enumerate(headers):
            self._wait_response_header(lowered[index], name, value)

    def _wait_response_header(self, lowered: bytes, name: bytes, value: bytes) -> None:
        waiting = self.response_headers
        names = self._waiting_names
        if lowered in names:
            self.response_headers = waiting = [(k, v) for k, v in waiting if k.lower() != lowered]
        else:
            names.add(lowered)
        waiting.append((name, value))

    def add_response_header(self, name: str, value: str) -> None:
        """Another value for the header, after the ones it has (Kong's ``add_header``)."""
        headers = self._response_list
        if headers is None:
            self.response_headers.append((_encode_name(name), encode_header(value)))
            self._waiting_names.add(_lowered_name(name))
        elif _lowered_name(name) not in _FRAMING_NAMES:
            headers.append((_encode_name(name), encode_header(value)))

    def clear_response_header(self, name: str) -> None:
        lowered = _lowered_name(name)
        if lowered in self._waiting_names:
            self._waiting_names.discard(lowered)
            self.response_headers = [(k, v) for k, v in self.response_headers if k.lower() != lowered]
        headers = self._response_list
        if headers is not None and lowered not in _FRAMING_NAMES:
            headers[:] = [(k, v) for k, v in headers if k.lower() != lowered]

    def response_header_values(self, name: str) -> list[str]:
        lowered = _lowered_name(name)
        headers = self._response_list
        if headers is None:
            headers = self.response_headers
        return [v.decode("latin-1") for k, v in headers if k.lower() == lowered]

    def response_header(self, name: str) -> str | None:
        """The first value of a response header (case-insensitive), as Kong's ``get_header``."""
        values = self.response_header_values(name)
        return values[0] if values else None

    def response_head_bytes(self) -> int:
        """What the response's header lines weigh (``name: value\r\n`` each), as sent."""
        headers = self._response_list
        if headers is None:
            headers = self.response_headers
        return sum(len(k) + len(v) + 4 for k, v in headers)

    def response_header_items(self) -> list[tuple[str, str]]:
        """Every response header, in order (names as they will be sent)."""
        headers = self._response_list
        if headers is None:
            headers = self.response_headers
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]

    def attach_response(self, headers: list[tuple[bytes, bytes]]) -> None:
        """The proxy hands over the response's header list (edited in place from now on); headers
        set earlier replace the response's own of the same name."""
        pending, self.response_headers = self.response_headers, []
        self._response_list = headers
        if not pending:
            return
        names = self._waiting_names
        if not names.isdisjoint(_FRAMING_NAMES):
            pending = [(name, value) for name, value in pending if name.lower() not in _FRAMING_NAMES]
            names = names - _FRAMING_NAMES
        # One pass over the response's headers for all of them (rate-limiting sets seven).
        for key, _ in headers:
            if key.lower() in names:
                headers[:] = [(k, v) for k, v in headers if k.lower() not in names]
                break
        headers.extend(pending)
        self._waiting_names = set()

    def serialize(self) -> dict[str, Any]:
        """Kong's ``kong.log.serialize()``: built once per request, for log-phase plugins only
        (the same dict for every plugin of the chain: treat it as read-only)."""
        if self._log_entry is None:
            self._log_entry = self.request.serialize()
        return self._log_entry

    def buffer_response_body(self) -> None:
        """From a response phase: hold the whole body and run the ``body`` phases on it."""
        self.body_wanted = True


# This module is compiled (zonegate.compiled), and a compiled class takes no interpreted
# subclass unless it says so: every plugin is one.
@mypyc_attr(allow_interpreted_subclasses=True)
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
        # The phases it defines, looked up once: a request's chain then skips the others without
        # searching the class hierarchy (or making a bound method) per plugin and phase.
        self.access_phase: Callable[[PluginContext], AccessResult] | None = getattr(self, "access", None)
        self.response_phase: Callable[[PluginContext], None] | None = getattr(self, "response", None)
        self.body_phase: Callable[[PluginContext, bytes], bytes] | None = getattr(self, "body", None)
        self.log_phase: Callable[[PluginContext], None] | None = getattr(self, "log", None)

    def configure(self, shared: SharedIndexes) -> None:
        """Precompute what requests need (compiled patterns, lookups); runs at apply time."""

    @classmethod
    def init_worker(cls, settings: Settings) -> None:
        """Once per proxy process, before it serves (Kong's ``init_worker``): connections or
        state a plugin keeps across configs (e.g. a bus client for cluster-wide counters)."""

    @classmethod
    async def close_worker(cls) -> None:
        """Once per proxy process, after its last request (Kong's worker exit): flush what is
        queued and close clients, quickly: the process is stopping."""


class SharedIndexes(Protocol):
    """Lookups over the whole config that plugins share (built once per config, on demand)."""

    def consumer(self, id_or_username: str) -> Mapping[str, Any] | None: ...

    def by_field(self, kind: str, field_name: str) -> Mapping[Any, Mapping[str, Any]]: ...

    def grouped(self, kind: str, field_name: str) -> Mapping[Any, tuple[Mapping[str, Any], ...]]: ...

    def of(self, kind: str) -> tuple[Mapping[str, Any], ...]: ...
