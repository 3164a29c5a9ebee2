"""Kong's ``traditional_compatible`` HTTP router: compiled once per config, then a pure lookup.

Which route wins
----------------
Kong turns every route into a 64-bit priority (``get_priority`` in ``kong/router/transform.lua``)
and its ATC matcher tries routes from the highest priority down, taking the first whose
conditions all hold. Read as a sort key, most significant part first, the priority is:

1. The match weight: how many of ``methods``, ``hosts``, ``headers``, ``snis`` and ``paths``
   are non-empty (bits 61-63). A route that says more wins over one that says less.
2. Plain hosts only: the route has a ``hosts`` list and no entry holds ``*`` (bit 60). Kong
   tests ``type(hosts) == "table"``, so an empty ``hosts: []`` counts as plain too.
3. The header count: how many header names the route matches on, capped at 255 (bits 52-59).
4. Regex path: the route's paths are regexes (bit 51), so a regex outranks any prefix.
5. ``regex_priority``, for regex paths only; it is zero for prefix routes (bits 19-50).
6. The prefix length in bytes (bits 0-18): among otherwise equal routes the longest prefix wins.

A route with several paths is first split (``split_routes_and_services_by_path``): one
sub-route holding all its regex paths and one per prefix length, each with its own priority,
so a route's long prefix does not lend its rank to the same route's short prefix. Among equal
priorities the ATC router walks its ``BTreeMap<(priority, uuid)>`` in reverse (atc-router
``router.rs``), so the greater UUID wins; a split sub-route's UUID is Kong's
``uuid5("7f145bf9-...", "<route id>#<group index>")``. We reproduce that exactly, which also
gives a stable order without ``created_at``.

Which request matches a route (``get_expression`` in ``transform.lua``)
------------------------------------------------------------------------
Every non-empty field must match. Methods compare exactly. A host matches case-insensitively,
exactly, or by suffix for ``*.example.com`` (any number of labels), or by prefix for
``example.*``; a host with a port also needs the request's port, where a Host header without a
port means the scheme's default port. Paths match the normalised request path: a prefix path
as a plain string prefix (``/foo`` matches ``/foobar``), a regex with ``^`` glued in front (so
``~/a|/b`` finds ``/b`` anywhere, as in Kong). Headers compare lower-cased: an exact value,
or ``~*regex`` searched in the lower-cased value, with the regex text itself lower-cased as Kong
does. SNIs are only checked on https requests. Protocols are not matched at all: an
https-only route that otherwise matches a plain http request wins and is answered with its
``https_redirect_status_code`` (``Match.redirect_status``), exactly as Kong's access phase does.

Paths
-----
The request path is normalised as ``kong/tools/uri.lua`` does since Kong 3.0 (PR #8140):
every percent-escape is decoded except those of reserved characters (which are upper-cased),
dot segments are removed, and repeated slashes merged. The upstream path is built from that
normalised path, not the raw one, and re-escaped for the wire (Kong's ``escape``): what the
upstream receives must be what the router judged, otherwise ``/public/..%2Fadmin``-style
requests could match one route and reach a different resource. ``traditional_compatible``
always joins paths the ``v0`` way (``get_upstream_uri_v0`` in ``kong/router/atc.lua``; the
Admin API reference says "the path handling behavior will be v0 regardless of the value of
route.path_handling"); ``compile_router(..., honor_path_handling=True)`` follows the route's
field as the ``traditional`` flavour did.

Strings are byte strings carried in ``str``, one character per byte (latin-1), which is how the
proxy hands over what it read off the wire; route values from the config are converted to that
form (UTF-8 bytes) when compiling. For ASCII, the normal case, nothing changes.

Invariant: ``Router.match`` returns exactly the route a linear scan in the order above would
return; the index only decides what need not be looked at. Routes are grouped by exact host,
by wildcard suffix or prefix, and "no host". In each group, prefix paths sit in hash tables
keyed by the prefix itself, one table per (first path segment, length), and regex paths in the
same kind of table keyed by the literal text their pattern must start with. Every route has a
rank (the order above packed into one integer, ``route_index.rank_of``) and every table knows the
best rank it holds, so a lookup
probes tables best-first and stops as soon as no table can beat the match in hand: the cost
depends on the number of distinct prefix lengths, not on the number of routes.

Two bounded memos sit in front, as in Kong: Host value -> host groups (Kong memoises
``split_host_port``), and whole decisions (Kong's 5,000-entry LRU in ``atc.lua``), which is safe
because a ``Match`` is immutable.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from zonegate.core.config import Config
from zonegate.core.config_delta import ConfigDelta
from zonegate.core.pcre import to_python
from zonegate.core.uri import normalize as normalize_request_path
from zonegate.data_plane.route_index import (
    PREFIX,
    REGEX,
    UNRANKED,
    Bucket,
    Entry,
    Probe,
    RouteIndex,
    rank_of,
)

HTTP_PROTOCOLS: Final = frozenset({"http", "https", "grpc", "grpcs"})
MAX_HEADER_COUNT: Final = 255
# Kong's namespace for the ids of split routes (kong/router/transform.lua).
SPLIT_NAMESPACE: Final = uuid.UUID("7f145bf9-0dce-4f91-98eb-debbce4b9f6b")

_EMPTY_CAPTURES: Final[Mapping[str, str]] = {}


# -- request path normalisation and escaping (kong/tools/uri.lua) ---------------------------------

# What Kong's ``escape`` leaves alone; everything else goes upstream percent-encoded.
_UNSAFE_RE: Final = re.compile(r"[^!#$&'()*+,/:;=?@\[\]A-Za-z0-9\-_.~%]")


def _escape_match(match: re.Match[str]) -> str:
    char = match.group()
    # One char is one byte in the router's strings; anything wider came from elsewhere as text.
    raw = char.encode("latin-1") if ord(char) < 256 else char.encode("utf-8")
    return "".join(f"%{byte:02X}" for byte in raw)


def escape_path(path: str) -> str:
    """Kong's ``escape``: percent-encode what may not travel as is (spaces, controls, non-ASCII)."""
    if _UNSAFE_RE.search(path) is None:
        return path
    return _UNSAFE_RE.sub(_escape_match, path)


# -- joining service path and request path --------------------------------------------------------


def _sanitize_postfix(postfix: str) -> str:
    # kong/router/utils.lua sanitize_uri_postfix: a postfix must not smuggle a dot segment.
    if postfix in (".", ".."):
        return ""
    if postfix.startswith("./"):
        return postfix[2:]
    if postfix.startswith("../"):
        return postfix[3:]
    return postfix


def join_upstream_path(
    service_path: str | None,
    request_path: str,
    matched_prefix: str | None,
    strip_path: bool,
    path_handling: str = "v0",
) -> str:
    """The upstream path for a normalised ``request_path`` (Kong's path-handling table).

    ``matched_prefix`` is the part of the request path the route's path matched (the prefix
    itself, or everything a regex matched), ``None`` when the route has no paths.
    ``v0`` joins service path and remainder as segments; ``v1`` treats the service path as a
    plain string prefix.
    """
    base = service_path or "/"
    if strip_path and matched_prefix is not None:
        postfix = _sanitize_postfix(request_path[len(matched_prefix) :])
    else:
        postfix = _sanitize_postfix(request_path[1:])
    if path_handling == "v1":
        if not strip_path:
            return base + request_path[1:]
        if base.endswith("/") and postfix.startswith("/"):
            return base[:-1] + postfix
        return base + postfix
    if base.endswith("/"):
        if not strip_path:
            return base + request_path[1:]
        if not postfix:
            if base == "/":
                return "/"
            return base if request_path.endswith("/") else base[:-1]
        return base[:-1] + postfix if postfix.startswith("/") else base + postfix
    if not strip_path:
        return base if request_path == "/" else base + request_path
    if not postfix:
        return base + "/" if len(request_path) > 1 and request_path.endswith("/") else base
    return base + postfix if postfix.startswith("/") else base + "/" + postfix


# -- the result -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Match:
    """What the proxy needs from a routing decision.

    ``uri_captures`` holds the named groups of a regex path that took part in the match;
    ``uri_groups`` every numbered group in order (``""`` for one that did not take part), so
    ``uri_groups[0]`` is Kong's ``uri_captures[1]``; ``matched_path`` is the prefix or the whole
    regex match (Kong's ``uri_captures[0]``). ``matched_host`` is the route's host entry that
    matched, as written. ``redirect_status`` is set when only the protocol is wrong.
    """

    route: dict[str, Any]
    service: dict[str, Any] | None
    upstream_path: str
    upstream_host: str | None
    uri_captures: Mapping[str, str]
    uri_groups: tuple[str, ...]
    matched_path: str | None
    matched_host: str | None
    redirect_status: int | None


# -- priorities -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Priority:
    """Kong's 64-bit route priority, field by field, most significant first."""

    weight: int
    plain_hosts_only: bool
    header_count: int
    regex: bool
    regex_priority: int
    prefix_length: int


def priority_of(route: Mapping[str, Any], paths: list[str] | None) -> Priority:
    """The priority of ``route`` restricted to ``paths`` (one group after the split)."""
    hosts = route.get("hosts")
    headers = route.get("headers")
    weight = sum(1 for v in (route.get("methods"), hosts, headers, route.get("snis"), paths) if v)
    regex = paths[0].startswith("~") if paths else False
    length = len(paths[0].encode("utf-8")) if paths and not regex else 0
    return Priority(
        weight=weight,
        plain_hosts_only=hosts is not None and not any("*" in h for h in hosts),
        header_count=min(len(headers or ()), MAX_HEADER_COUNT),
        regex=regex,
        regex_priority=int(route.get("regex_priority") or 0) if regex else 0,
        prefix_length=length & 0x7FFFF,
    )


def split_paths(route: Mapping[str, Any]) -> list[tuple[str, list[str] | None]]:
    """Kong's split: (sub-route id, paths) per group of regex paths or of same-length prefixes."""
    paths: list[str] | None = route.get("paths")
    if not paths:
        return [(route["id"], None)]
    groups: dict[int, list[str]] = {}
    for path in paths:
        key = 0 if path.startswith("~") else len(path.encode("utf-8"))
        groups.setdefault(key, []).append(path)
    if len(groups) == 1:
        return [(route["id"], paths)]
    return [
        (str(uuid.uuid5(SPLIT_NAMESPACE, f"{route['id']}#{index}")), group)
        for index, group in enumerate(groups.values(), start=1)
    ]


# -- compiled pieces ------------------------------------------------------------------------------


def _wire(text: str) -> str:
    """A config string in the router's one-char-per-byte form."""
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


def _literal_prefix(pattern: str) -> str:
    """A string every path the regex ``^pattern`` matches must start with ("" if unsure)."""
    if "|" in pattern:
        return ""  # an alternation can escape the leading anchor (see the module docstring)
    literal: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern) and not pattern[index + 1].isalnum():
            literal.append(pattern[index + 1])
            index += 2
            continue
        if char in ".^$*+?{}[]()\\":
            if char in "*?{+" and literal:
                literal.pop()  # the last literal is quantified, perhaps zero times
            break
        literal.append(char)
        index += 1
    return "".join(literal)


class _Matcher:
    """One route, or one path group of a split route, with its conditions precompiled."""

    __slots__ = (
        "headers",
        "join",
        "methods",
        "path_handling",
        "prefixes",
        "preserve_host",
        "priority",
        "rank",
        "redirect_status",
        "regexes",
        "route",
        "service",
        "service_path",
        "snis",
        "sort_id",
        "strip_base",
        "strip_path",
    )

    def __init__(
        self,
        route: dict[str, Any],
        service: dict[str, Any] | None,
        sub_id: str,
        paths: list[str] | None,
        honor_path_handling: bool,
    ) -> None:
        self.route = route
        self.service = service
        self.priority = priority_of(route, paths)
        self.sort_id = _uuid_bytes(sub_id)
        p = self.priority
        self.rank = rank_of(
            (p.weight, p.plain_hosts_only, p.header_count, p.regex, p.regex_priority, p.prefix_length),
            self.sort_id,
        )
        methods = route.get("methods")
        self.methods: frozenset[str] | None = frozenset(methods) if methods else None
        snis = route.get("snis")
        self.snis: tuple[tuple[int, str], ...] | None = tuple(map(_sni_rule, snis)) if snis else None
        headers = route.get("headers")
        self.headers: tuple[tuple[str, frozenset[str], tuple[re.Pattern[str], ...]], ...] | None = (
            tuple(_header_rule(name, values) for name, values in headers.items()) if headers else None
        )
        self.prefixes: tuple[str, ...] = ()
        self.regexes: tuple[tuple[re.Pattern[str], str], ...] = ()
        if paths and paths[0].startswith("~"):
            self.regexes = tuple(_path_regex(_wire(p[1:])) for p in paths)
        elif paths:
            # Stored prefixes are already normal; normalising again (idempotent) also covers
            # the few escapes our schema accepts that Kong's would have decoded.
            self.prefixes = tuple(dict.fromkeys(normalize_request_path(_wire(p)) for p in paths))
        self.strip_path = bool(route.get("strip_path"))
        self.preserve_host = bool(route.get("preserve_host"))
        self.service_path: str = _wire(service.get("path") or "/") if service else "/"
        handling = route.get("path_handling") or "v0"
        self.path_handling: str = handling if honor_path_handling else "v0"
        protocols = route.get("protocols") or ()
        https_only = "https" in protocols and "http" not in protocols
        self.redirect_status: int | None = (
            int(route.get("https_redirect_status_code") or 426) if https_only else None
        )
        self.join = _join_mode(self.path_handling, self.strip_path, self.service_path)
        self.strip_base = self.service_path.removesuffix("/")


# How _upstream_path may shortcut join_upstream_path for a matcher (v0 only; same results):
_JOIN_GENERAL: Final = 0  # anything else: call join_upstream_path
_JOIN_PATH: Final = 1  # no strip, service path "/": the request path as is
_JOIN_APPEND: Final = 2  # no strip, service path without trailing "/": base + path
_JOIN_STRIP: Final = 3  # strip: base (without its trailing "/") + remainder, when that starts with "/"


def _join_mode(path_handling: str, strip_path: bool, base: str) -> int:
    if path_handling != "v0":
        return _JOIN_GENERAL
    if not strip_path:
        if base == "/":
            return _JOIN_PATH
        return _JOIN_GENERAL if base.endswith("/") else _JOIN_APPEND
    return _JOIN_STRIP


def _path_regex(pattern: str) -> tuple[re.Pattern[str], str]:
    """Kong glues "^" in front of the regex text (path_val_transform) and searches with it."""
    return re.compile("^" + to_python(pattern)), _literal_prefix(pattern)


def _uuid_bytes(value: str) -> bytes:
    try:
        return uuid.UUID(value).bytes
    except ValueError:
        return value.encode()


def _sni_rule(sni: str) -> tuple[int, str]:
    """(0 exact | 1 suffix | 2 prefix, value), as transform.lua's sni_op/val_transform."""
    sni = sni.lower()
    if sni.endswith("*"):
        return 2, sni[:-1]
    if len(sni) > 1 and sni.endswith("."):
        sni = sni[:-1]  # the root dot of an FQDN is not used for routing
    if sni.startswith("*"):
        return 1, sni[1:]
    return 0, sni


def _header_name(name: str) -> str:
    # Kong reads http.headers.<name with "-" as "_">, and nginx's header table maps "_" back to
    # "-": so "X_Foo" and "x-foo" name the same request header.
    return name.lower().replace("_", "-")


def _header_rule(name: str, values: list[str]) -> tuple[str, frozenset[str], tuple[re.Pattern[str], ...]]:
    exact = frozenset(_wire(v).lower() for v in values if not v.startswith("~*"))
    # Kong lower-cases the regex text itself before compiling (transform.lua escape_str(value:lower())).
    patterns = tuple(re.compile(to_python(_wire(v[2:]).lower())) for v in values if v.startswith("~*"))
    return _header_name(name), exact, patterns


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '¹', which int() refuses."""
    return text.isascii() and text.isdigit()


def _split_host(host: str) -> tuple[str, int | None]:
    """("name", port) from a Host value; a port that is not all digits is part of the name."""
    if host.startswith("["):
        end = host.find("]")
        if (
            end != -1
            and host[end + 1 : end + 2] == ":"
            and host[end + 2 :].isascii()
            and host[end + 2 :].isdigit()
        ):
            return host[: end + 1], int(host[end + 2 :])
        return host, None
    colon = host.find(":")
    if colon != -1 and _digits(host[colon + 1 :]):
        return host[:colon], int(host[colon + 1 :])
    return host, None


# -- the router -----------------------------------------------------------------------------------

_HOST_MEMO_SIZE: Final = 8192
# Kong's atc router caches whole routing decisions (5,000 entries, kong/router/utils.lua); the
# results are immutable, so the same Match can serve every request with the same inputs.
MATCH_CACHE_SIZE: Final = 5000
_NOT_CACHED: Final[Any] = object()
_MatchKey = tuple[str, str, str | None, str, str | None, tuple[tuple[str, str], ...] | None]
_HostPlan = tuple[tuple[Bucket, ...], int | None]
# A route's compiled matchers with the route and service they were built from.
_Compiled = tuple[
    dict[str, Any], dict[str, Any] | None, bool, list[_Matcher], list[tuple[str, str, int | None]]
]


class Router:
    """Compiled routes; ``match`` is pure (its host memo only caches a function of the Host)."""

    __slots__ = (
        "_any",
        "_cache_size",
        "_exact",
        "_host_memo",
        "_index",
        "_match_memo",
        "_matchers",
        "_no_host",
        "_prefix_hosts",
        "_routes_of",
        "_service_of",
        "_suffix_hosts",
        "needs_headers",
        "rejected",
        "size",
    )

    def __init__(
        self,
        index: RouteIndex,
        needs_headers: frozenset[str],
        rejected: tuple[tuple[str, str], ...],
        size: int,
        cache_size: int = MATCH_CACHE_SIZE,
        matchers: dict[str, _Compiled] | None = None,
        routes_of: dict[str | None, dict[str, dict[str, Any]]] | None = None,
        service_of: dict[str, str | None] | None = None,
    ) -> None:
        # Route id -> what was compiled for it, and the index, so the next compile reuses and
        # updates what did not change.
        self._matchers: dict[str, _Compiled] = matchers or {}
        # Every route (compiled or not) by service id, and each route's service id: which routes
        # a changed service touches, without looking at every route.
        self._routes_of: dict[str | None, dict[str, dict[str, Any]]] = routes_of or {}
        self._service_of: dict[str, str | None] = service_of or {}
        self._index = index
        self._exact = index.exact
        self._suffix_hosts = index.suffix
        self._prefix_hosts = index.prefix
        self._any = index.any_host
        self._no_host: _HostPlan = ((index.any_host,), None)
        # Host header -> (buckets, port): like Kong's memo of split_host_port, it spares the
        # parsing and wildcard probing for the few Host values a proxy sees again and again.
        self._host_memo: dict[str, _HostPlan] = {}
        self._match_memo: dict[_MatchKey, Match | None] | None = {} if cache_size > 0 else None
        self._cache_size = cache_size
        self.needs_headers = needs_headers
        # (route id, reason) for routes left out because a regex would not compile; Kong logs
        # and skips such a route too.
        self.rejected = rejected
        self.size = size

    def __len__(self) -> int:
        return self.size

    def _plan(self, host: str) -> _HostPlan:
        name, port = _split_host(host.lower())
        buckets: list[Bucket] = []
        exact = self._exact.get(name)
        if exact is not None:
            buckets.append(exact)
        for table, keys in (
            (self._suffix_hosts, (name[i:] for i, c in enumerate(name) if c == ".")),
            (self._prefix_hosts, (name[: i + 1] for i, c in enumerate(name) if c == ".")),
        ):
            if table:
                buckets.extend(table[key] for key in keys if key in table)
        buckets.append(self._any)
        plan = (tuple(buckets), port)
        if len(self._host_memo) >= _HOST_MEMO_SIZE:
            self._host_memo.clear()  # many distinct hosts: start over rather than grow
        self._host_memo[host] = plan
        return plan

    def match(
        self,
        method: str,
        scheme: str,
        host: str | None,
        path: str,
        headers: Mapping[str, str] | None = None,
        sni: str | None = None,
    ) -> Match | None:
        memo = self._match_memo
        if memo is not None:
            memo_key = (method, scheme, host, path, sni, tuple(headers.items()) if headers else None)
            cached = memo.get(memo_key, _NOT_CACHED)
            if cached is not _NOT_CACHED:
                found: Match | None = cached
                return found
            if len(memo) >= self._cache_size:
                memo.clear()  # a working set this large gains little from a cache: start over

        plan = self._no_host if host is None else self._host_memo.get(host) or self._plan(host)
        buckets, port = plan
        if port is None:
            # A Host without a port is on the scheme's default port (as the traditional router).
            port = 443 if scheme == "https" else 80
        # Most paths have nothing to normalise; these checks cost less than the call (and far
        # less than one regex with alternatives, which sre tries at every position).
        if "%" in path or "/." in path or "//" in path or path.startswith("."):
            npath = normalize_request_path(path)
        else:
            npath = path
        cut = npath.find("/", 1)
        segment = npath[1:cut] if cut > 0 else None

        groups: list[tuple[Probe, ...]] = []
        for main, by_segment in buckets:
            if main:
                groups.append(main)
            if segment is not None and by_segment:
                sub = by_segment.get(segment)
                if sub is not None:
                    groups.append(sub)

        best_rank = UNRANKED
        best: Entry | None = None
        best_regex: re.Match[str] | None = None
        best_path: str | None = None
        path_len = len(npath)
        for probes in groups:
            for top, length, table, kind in probes:
                if top >= best_rank:
                    break
                if length > path_len:
                    continue
                key = npath[:length]
                hits = table.get(key)
                if hits is None:
                    continue
                for entry in hits:
                    if entry.rank >= best_rank:
                        break
                    if not entry.simple and not _accepts(entry, method, scheme, port, sni, headers):
                        continue
                    if kind == REGEX:
                        found_regex = _search(entry.matcher, npath)
                        if found_regex is None:
                            continue
                        best_regex = found_regex
                        best_path = found_regex.group(0)
                    else:
                        best_regex = None
                        best_path = key if kind == PREFIX else None
                    best_rank = entry.rank
                    best = entry
                    break
        if best is None:
            if memo is not None:
                memo[memo_key] = None
            return None

        # The result, built here rather than in a helper: a call costs ~0.1 us on this path.
        matcher = best.matcher
        if best_regex is not None:
            captures: Mapping[str, str] = best_regex.groupdict()
            if None in captures.values():  # Kong leaves out the groups that took no part
                captures = {k: v for k, v in captures.items() if v is not None}
            numbered = best_regex.groups("")
        else:
            captures = _EMPTY_CAPTURES
            numbered = ()
        join = matcher.join
        if join == _JOIN_PATH:
            upstream = npath
        elif join == _JOIN_STRIP and best_path is not None and npath.startswith("/", len(best_path)):
            upstream = matcher.strip_base + npath[len(best_path) :]
        else:
            upstream = _upstream_path(matcher, npath, best_path if matcher.strip_path else None)
        if _search_unsafe(upstream) is not None:
            upstream = escape_path(upstream)
        result = Match(
            matcher.route,
            matcher.service,
            upstream,
            host if matcher.preserve_host else None,
            captures,
            numbered,
            best_path,
            best.host,
            matcher.redirect_status if scheme != "https" else None,
        )
        if memo is not None:
            memo[memo_key] = result
        return result


def _search(matcher: _Matcher, path: str) -> re.Match[str] | None:
    # In the route's order, as Kong's "p1 || p2 || ..." evaluates: the first regex that matches
    # supplies the captures.
    for regex, literal in matcher.regexes:
        if path.startswith(literal):
            found = regex.search(path)
            if found is not None:
                return found
    return None


def _accepts(
    entry: Entry,
    method: str,
    scheme: str,
    port: int,
    sni: str | None,
    headers: Mapping[str, str] | None,
) -> bool:
    if entry.port is not None and entry.port != port:
        return False
    matcher = entry.matcher
    if matcher.methods is not None and method not in matcher.methods:
        return False
    # "(net.protocol != https || tls.sni ...)": SNIs constrain https requests only.
    if (
        matcher.snis is not None
        and scheme == "https"
        and (sni is None or not _sni_matches(matcher.snis, sni.lower()))
    ):
        return False
    if matcher.headers is not None:
        if headers is None:
            return False
        for name, exact, patterns in matcher.headers:
            value = headers.get(name)
            if value is None:
                return False
            value = value.lower()
            if value in exact:
                continue
            if not any(pattern.search(value) for pattern in patterns):
                return False
    return True


def _sni_matches(rules: tuple[tuple[int, str], ...], sni: str) -> bool:
    for op, value in rules:
        if op == 0 and sni == value:
            return True
        if op == 1 and sni.endswith(value):
            return True
        if op == 2 and sni.startswith(value):
            return True
    return False


_search_unsafe = _UNSAFE_RE.search


def _upstream_path(matcher: _Matcher, npath: str, matched_path: str | None) -> str:
    """join_upstream_path, with the joins most routes take spelled out first (same results)."""
    join = matcher.join
    base = matcher.service_path
    if join == _JOIN_PATH:
        return npath
    if join == _JOIN_APPEND:
        return base if npath == "/" else base + npath
    if join == _JOIN_STRIP and matched_path is not None:
        postfix = npath[len(matched_path) :]
        if postfix.startswith("/"):
            return matcher.strip_base + postfix
    return join_upstream_path(base, npath, matched_path, matcher.strip_path, matcher.path_handling)


def _route_hosts(route: Mapping[str, Any]) -> list[tuple[str, str, int | None]]:
    """(as written, lower-cased name, port) for each host entry of the route."""
    result = []
    for written in route.get("hosts") or ():
        name, port = _split_host(written.lower())
        result.append((written, name, port))
    return result


# Up to this many routes changed (or an eighth of them), the previous index is updated in place
# of building a new one: past that, building whole is as quick and leaves no garbage behind.
_INCREMENTAL_LIMIT: Final = 64


def _same_service(
    before: dict[str, Any] | None, service: dict[str, Any] | None, memo: dict[str, bool]
) -> bool:
    """``before == service``, compared once per service rather than once per route."""
    if before is service:  # a delta keeps the objects of unchanged entities
        return True
    if before is None or service is None:
        return False
    key = service["id"]
    if before["id"] != key:  # the route moved to another service
        return False
    same = memo.get(key)
    if same is None:
        same = memo[key] = before == service
    return same


def compile_router(
    config: Config,
    *,
    honor_path_handling: bool = False,
    cache_size: int = MATCH_CACHE_SIZE,
    previous: Router | None = None,
    change: ConfigDelta | None = None,
) -> Router:
    """Index the HTTP routes of ``config``; routes of disabled services are left out, as Kong exports them.

    ``cache_size`` bounds the cache of whole decisions (0: none), ``honor_path_handling``
    applies ``path_handling: v1`` as the ``traditional`` flavour did instead of ignoring it.
    ``previous``: the router of the config this one replaces; a route equal to its entry there
    (route and service fields alike) keeps its compiled matchers, so a change to one route of
    10,000 compiles one route and re-indexes the rest. ``change``: exactly what turned the
    previous router's config into ``config`` (a delta snapshot); then only the routes it names,
    and the routes of the services it names, are looked at, instead of every route.
    """
    if previous is not None and change is not None:
        return _compile_change(config, previous, change, honor_path_handling, cache_size)
    services = config.by_id("services")
    known = previous._matchers if previous is not None else {}
    compiled: dict[str, _Compiled] = {}
    reused: set[str] = set()
    same_services: dict[str, bool] = {}  # service id -> equal to its previous version
    rejected: list[tuple[str, str]] = []
    routes_of: dict[str | None, dict[str, dict[str, Any]]] = {}
    service_of: dict[str, str | None] = {}
    for route in config.of("routes"):
        ref = route.get("service")
        service_id: str | None = ref["id"] if ref else None
        service = services.get(service_id) if service_id is not None else None
        route_id: str = route["id"]
        routes_of.setdefault(service_id, {})[route_id] = route
        service_of[route_id] = service_id
        before = known.get(route_id)
        _compile_route(route, service, before, honor_path_handling, same_services, compiled, reused, rejected)
    changed = len(compiled) - len(reused) + len(known) - len(reused)
    if previous is None or changed > max(_INCREMENTAL_LIMIT, len(compiled) // 8):
        index = RouteIndex.build(_placed(compiled.values()))
    else:
        index = previous._index.updated(
            _placed(entry for route_id, entry in known.items() if route_id not in reused),
            _placed(entry for route_id, entry in compiled.items() if route_id not in reused),
        )
    return Router(
        index,
        needs_headers=_header_names(compiled.values()),
        rejected=tuple(rejected),
        size=len(compiled),
        cache_size=cache_size,
        matchers=compiled,
        routes_of=routes_of,
        service_of=service_of,
    )


def _compile_change(
    config: Config, previous: Router, change: ConfigDelta, honor_path_handling: bool, cache_size: int
) -> Router:
    """``compile_router`` for a known change: every route it does not touch keeps its entry."""
    gone = set(change.deletes.get("routes", ()))
    upserted: dict[str, dict[str, Any]] = {route["id"]: route for route in change.upserts.get("routes", ())}
    routes_of, service_of = _moved_routes(previous, gone, upserted)
    affected = dict(upserted)
    for service_id in change.deletes.get("services", ()):
        routes_of.pop(service_id, None)  # its routes went with it (a delete cascades)
    for changed in change.upserts.get("services", ()):
        # Its routes, changed or not, point at another service object now.
        for route_id, route in routes_of.get(changed["id"], {}).items():
            affected.setdefault(route_id, route)
    first = next(iter(previous._matchers.values()), None)
    if len(affected) > max(_INCREMENTAL_LIMIT, previous.size // 8) or (
        first is not None and first[2] != honor_path_handling
    ):
        return compile_router(
            config, honor_path_handling=honor_path_handling, cache_size=cache_size, previous=previous
        )
    services = config.by_id("services") if affected else {}
    compiled = dict(previous._matchers)
    removed = [compiled.pop(route_id) for route_id in gone if route_id in compiled]
    reused: set[str] = set()
    rejected = [item for item in previous.rejected if item[0] not in affected and item[0] not in gone]
    same_services: dict[str, bool] = {}
    for route_id, route in affected.items():
        before = compiled.pop(route_id, None)
        ref = route.get("service")
        service = services.get(ref["id"]) if ref else None
        _compile_route(route, service, before, honor_path_handling, same_services, compiled, reused, rejected)
        if before is not None and route_id not in reused:
            removed.append(before)
    added = [compiled[route_id] for route_id in affected if route_id in compiled and route_id not in reused]
    index = previous._index.updated(_placed(removed), _placed(added)) if removed or added else previous._index
    headers_moved = any(entry[0].get("headers") for entry in (*removed, *added))
    return Router(
        index,
        needs_headers=_header_names(compiled.values()) if headers_moved else previous.needs_headers,
        rejected=tuple(rejected),
        size=len(compiled),
        cache_size=cache_size,
        matchers=compiled,
        routes_of=routes_of,
        service_of=service_of,
    )


def _moved_routes(
    previous: Router, gone: set[str], upserted: dict[str, dict[str, Any]]
) -> tuple[dict[str | None, dict[str, dict[str, Any]]], dict[str, str | None]]:
    """``previous``'s routes by service with ``gone`` removed and ``upserted`` put in (copies of
    the maps and of the per-service tables they touch; ``previous`` keeps its own)."""
    routes_of = dict(previous._routes_of)
    service_of = dict(previous._service_of)
    copied: set[str | None] = set()

    def table(service_id: str | None) -> dict[str, dict[str, Any]]:
        if service_id not in copied:
            copied.add(service_id)
            routes_of[service_id] = dict(routes_of.get(service_id, {}))
        return routes_of[service_id]

    for route_id in gone:
        if route_id in service_of:
            table(service_of.pop(route_id)).pop(route_id, None)
    for route_id, route in upserted.items():
        ref = route.get("service")
        service_id: str | None = ref["id"] if ref else None
        if route_id in service_of and service_of[route_id] != service_id:
            table(service_of[route_id]).pop(route_id, None)
        table(service_id)[route_id] = route
        service_of[route_id] = service_id
    for service_id in copied:
        if not routes_of[service_id]:
            del routes_of[service_id]
    return routes_of, service_of


def _compile_route(
    route: dict[str, Any],
    service: dict[str, Any] | None,
    before: _Compiled | None,
    honor_path_handling: bool,
    same_services: dict[str, bool],
    compiled: dict[str, _Compiled],
    reused: set[str],
    rejected: list[tuple[str, str]],
) -> None:
    """Put ``route``'s entry in ``compiled`` (id in ``reused`` when ``before`` still serves), or
    leave it out: a stream route, a disabled service, a regex that does not compile."""
    route_id = route["id"]
    if (
        before is not None
        and before[0] is route
        and before[1] is service
        and before[2] == honor_path_handling
    ):
        # The very objects compiled last time (a delta keeps unchanged entities): nothing to check.
        compiled[route_id] = before
        reused.add(route_id)
        return
    if not HTTP_PROTOCOLS.intersection(route.get("protocols") or ()):
        return  # stream routes belong to the stream router
    if service is not None and service.get("enabled") is False:
        return
    if (
        before is not None
        and before[2] == honor_path_handling
        and (before[0] is route or before[0] == route)
        and _same_service(before[1], service, same_services)
    ):
        for matcher in before[3]:  # equal values: point at this config's objects, free the old
            matcher.route = route
            matcher.service = service
        compiled[route_id] = (route, service, honor_path_handling, before[3], before[4])
        reused.add(route_id)
        return
    try:
        built = [
            _Matcher(route, service, sub_id, paths, honor_path_handling)
            for sub_id, paths in split_paths(route)
        ]
    except re.error as exc:
        rejected.append((route_id, f"invalid regex: {exc}"))
        return
    compiled[route_id] = (route, service, honor_path_handling, built, _route_hosts(route))


def _placed(entries: Iterable[_Compiled]) -> Iterator[tuple[_Matcher, list[tuple[str, str, int | None]]]]:
    return ((matcher, entry[4]) for entry in entries for matcher in entry[3])


def _header_names(entries: Iterable[_Compiled]) -> frozenset[str]:
    """The request headers some route matches on: the only ones the proxy keeps for routing."""
    return frozenset(_header_name(name) for entry in entries for name in entry[0].get("headers") or ())
