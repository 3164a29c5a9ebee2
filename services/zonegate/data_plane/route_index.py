"""The router's index: routes grouped by host, then in path tables; built whole or updated.

A matcher (one route, or one path group of a split route) is *placed* in the bucket of each of
its hosts (exact, ``*.suffix``, ``prefix.*``, or the no-host bucket), and in each bucket in a
table per (first path segment, kind, key length), under each of its keys: a prefix, the literal
a regex must start with, or "" for a route without paths. ``router.Router.match`` walks this.

Every matcher carries an intrinsic ``rank`` (Kong's priority and the sub-route UUID packed into
one integer, lower is better): not its position in a sorted list, so adding or removing a route
leaves every other rank as it was. That is what lets ``RouteIndex.updated`` rebuild only the
tables a change touches, sharing everything else with the index it came from (which keeps
serving, unchanged, until the new router is swapped in): a change to one route of 10,000
re-sorts a few small tables instead of re-indexing them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from zonegate.data_plane.router import _Matcher

PREFIX: Final = 0
REGEX: Final = 1
ANY_PATH: Final = 2

_EXACT_HOST: Final = 0
_SUFFIX_HOST: Final = 1
_PREFIX_HOST: Final = 2
_NO_HOST: Final = 3

_U64: Final = (1 << 64) - 1
_U128: Final = (1 << 128) - 1
_PRIORITY_BITS: Final = 96
# Greater than any rank: the "nothing matched yet" of Router.match.
UNRANKED: Final = 1 << (_PRIORITY_BITS + 128)


def rank_of(priority: tuple[int, ...], sort_id: bytes) -> int:
    """Lower for the matcher tried first: Kong's priority fields, then the greater UUID.

    (weight, plain hosts only, header count, regex, regex_priority, prefix length) packed most
    significant first, as Kong's 64-bit priority does, but with room for any 64-bit
    regex_priority (Kong keeps 32 bits); ids that are not UUIDs (never from a validated config)
    are compared on their first 16 bytes.
    """
    weight, plain_hosts_only, header_count, regex, regex_priority, prefix_length = priority
    shifted = min(max(regex_priority + (1 << 63), 0), _U64)
    packed = (
        ((((weight << 1 | plain_hosts_only) << 8 | header_count) << 1 | regex) << 64 | shifted) << 19
    ) | (prefix_length)
    uuid = int.from_bytes(sort_id[:16].ljust(16, b"\0"))
    return (((1 << _PRIORITY_BITS) - 1 - packed) << 128) | (_U128 - uuid)


class Entry:
    """A matcher as seen from one host bucket: the port that host entry requires, if any."""

    __slots__ = ("host", "matcher", "port", "rank", "simple")

    def __init__(self, matcher: _Matcher, host: str | None, port: int | None) -> None:
        self.rank: int = matcher.rank
        self.matcher = matcher
        self.host = host
        self.port = port
        self.simple = (
            port is None and matcher.methods is None and matcher.snis is None and matcher.headers is None
        )


# A probe is (best rank inside, key length, table key -> entries by rank, kind).
Probe = tuple[int, int, dict[str, tuple[Entry, ...]], int]
# A bucket holds the routes of one host (or of no host): probes for paths with at most one "/"
# (and for regexes and path-less routes), plus probes per first path segment for the others,
# so a request only looks at the prefixes that share its first segment.
Bucket = tuple[tuple[Probe, ...], dict[str, tuple[Probe, ...]]]
TableKey = tuple[str | None, int, int]  # (first segment, kind, key length)
BucketKey = tuple[int, str]  # (which host table, host name or affix)
_Grouped = dict[BucketKey, dict[TableKey, dict[str, list[Entry]]]]


def first_segment(path: str) -> str | None:
    """ "a" for "/a/..."; None when there is no second slash (such keys stay in the main probes)."""
    cut = path.find("/", 1)
    return path[1:cut] if cut > 0 else None


def _table_key(kind: int, key: str) -> TableKey:
    return (first_segment(key) if key.startswith("/") else None, kind, len(key))


def _place(matcher: _Matcher, hosts: Iterable[tuple[str, str, int | None]], into: _Grouped) -> None:
    """Add an entry for ``matcher`` under each of its (bucket, table, key) places in ``into``."""
    if matcher.regexes:
        # Regex routes are indexed by a literal prefix every match must start with, so a
        # request only runs the regexes that can possibly match it.
        keys = [(REGEX, literal) for literal in dict.fromkeys(literal for _regex, literal in matcher.regexes)]
    elif matcher.prefixes:
        keys = [(PREFIX, prefix) for prefix in matcher.prefixes]
    else:
        keys = [(ANY_PATH, "")]
    places: list[tuple[BucketKey, str | None, int | None]] = []
    for written, name, port in hosts:
        if name.startswith("*"):
            places.append(((_SUFFIX_HOST, name[1:]), written, port))
        elif name.endswith("*"):
            places.append(((_PREFIX_HOST, name[:-1]), written, port))
        else:
            places.append(((_EXACT_HOST, name), written, port))
    if not places:
        places.append(((_NO_HOST, ""), None, None))
    for bucket_key, host, host_port in places:
        entry = Entry(matcher, host, host_port)
        tables = into.setdefault(bucket_key, {})
        for kind, key in keys:
            tables.setdefault(_table_key(kind, key), {}).setdefault(key, []).append(entry)


class _BucketState:
    """One bucket's frozen tables and probes; ``updated`` returns a new state sharing the rest."""

    __slots__ = ("bucket", "probes", "tables")

    def __init__(
        self,
        tables: dict[TableKey, dict[str, tuple[Entry, ...]]],
        probes: dict[TableKey, Probe],
        segments: Iterable[str | None] | None,
        previous: Bucket | None,
    ) -> None:
        self.tables = tables
        self.probes = probes
        main, by_segment = previous if previous is not None else ((), {})
        by_segment = dict(by_segment)
        wanted = set(segments) if segments is not None else {key[0] for key in probes}
        grouped: dict[str | None, list[Probe]] = {segment: [] for segment in wanted}
        for key, probe in probes.items():
            if key[0] in grouped:
                grouped[key[0]].append(probe)
        for segment, found in grouped.items():
            # Tried best-first, a probe whose best entry cannot beat the match in hand ends the scan.
            found.sort(key=lambda probe: probe[0])
            if segment is None:
                main = tuple(found)
            elif found:
                by_segment[segment] = tuple(found)
            else:
                by_segment.pop(segment, None)
        self.bucket: Bucket = (main, by_segment)

    @classmethod
    def build(cls, tables: Mapping[TableKey, dict[str, list[Entry]]]) -> _BucketState:
        frozen = {
            table_key: {key: tuple(sorted(entries, key=_by_rank)) for key, entries in table.items()}
            for table_key, table in tables.items()
        }
        return cls(frozen, {key: _probe(key, table) for key, table in frozen.items()}, None, None)

    def updated(
        self, gone: set[_Matcher], added: Mapping[TableKey, dict[str, list[Entry]]], touched: _Touched
    ) -> _BucketState | None:
        tables = dict(self.tables)
        probes = dict(self.probes)
        for table_key, keys in touched.items():
            table = dict(tables.get(table_key, {}))
            new = added.get(table_key, {})
            for key in keys:
                entries = [e for e in table.get(key, ()) if e.matcher not in gone] + new.get(key, [])
                if entries:
                    table[key] = tuple(sorted(entries, key=_by_rank))
                else:
                    table.pop(key, None)
            if table:
                tables[table_key] = table
                probes[table_key] = _probe(table_key, table)
            else:
                tables.pop(table_key, None)
                probes.pop(table_key, None)
        if not tables:
            return None
        return _BucketState(tables, probes, {key[0] for key in touched}, self.bucket)


_Touched = dict[TableKey, set[str]]


def _by_rank(entry: Entry) -> int:
    return entry.rank


def _probe(table_key: TableKey, table: dict[str, tuple[Entry, ...]]) -> Probe:
    return (min(entries[0].rank for entries in table.values()), table_key[2], table, table_key[1])


_EMPTY_BUCKET: Final[Bucket] = ((), {})


class RouteIndex:
    """The buckets by host; ``exact``, ``suffix``, ``prefix`` and ``any_host`` are what match() reads."""

    __slots__ = ("_states", "any_host", "exact", "prefix", "suffix")

    def __init__(self, states: dict[BucketKey, _BucketState]) -> None:
        self._states = states
        tables: tuple[dict[str, Bucket], ...] = ({}, {}, {})
        self.any_host: Bucket = _EMPTY_BUCKET
        for (which, name), state in states.items():
            if which == _NO_HOST:
                self.any_host = state.bucket
            else:
                tables[which][name] = state.bucket
        self.exact, self.suffix, self.prefix = tables

    @classmethod
    def build(cls, matchers: Iterable[tuple[_Matcher, list[tuple[str, str, int | None]]]]) -> RouteIndex:
        """The index of ``(matcher, its hosts)`` pairs."""
        grouped: _Grouped = {}
        for matcher, hosts in matchers:
            _place(matcher, hosts, grouped)
        return cls({key: _BucketState.build(tables) for key, tables in grouped.items()})

    def updated(
        self,
        removed: Iterable[tuple[_Matcher, list[tuple[str, str, int | None]]]],
        added: Iterable[tuple[_Matcher, list[tuple[str, str, int | None]]]],
    ) -> RouteIndex:
        """This index without ``removed`` and with ``added``; this one is left as it was."""
        gone: set[_Matcher] = set()
        old_places: _Grouped = {}
        for matcher, hosts in removed:
            gone.add(matcher)
            _place(matcher, hosts, old_places)
        new_places: _Grouped = {}
        for matcher, hosts in added:
            _place(matcher, hosts, new_places)
        touched: dict[BucketKey, _Touched] = {}
        for places in (old_places, new_places):
            for bucket_key, tables in places.items():
                marks = touched.setdefault(bucket_key, {})
                for table_key, table in tables.items():
                    marks.setdefault(table_key, set()).update(table)
        states = dict(self._states)
        for bucket_key, marks in touched.items():
            before = states.get(bucket_key) or _BucketState({}, {}, (), None)
            after = before.updated(gone, new_places.get(bucket_key, {}), marks)
            if after is None:
                states.pop(bucket_key, None)
            else:
                states[bucket_key] = after
        return RouteIndex(states)
