"""The ring-balancer: picks a target address for each request to an upstream (pure: no I/O, no asyncio).

Kong's ``kong/runloop/balancer/`` split into what the proxy needs on its hot path:

- ``Balancers.build(config, previous)`` turns the upstreams and targets of a config into one
  ``UpstreamBalancer`` per upstream, off the hot path. Health state, health counters and in-flight
  connection counts of addresses that still exist are carried over from ``previous``: they live in a
  per-address ``_Peer`` shared by every balancer built for the same upstream id, target and IP:port, so a
  request that started on the old balancer and finishes after the swap still releases its connection
  and reports its outcome where the new balancer sees it.
- ``UpstreamBalancer.select(hash_key, tried)`` returns an ``Address`` or None (no usable target: the
  proxy answers 503 "failure to get a peer from the ring-balancer"). One attribute compare tells it
  whether health changed since it last looked; no allocation on the common path.
- ``report`` (passive checks, from proxied traffic) and ``record_probe`` (active checks, from
  ``health.HealthChecker``) drive lua-resty-healthcheck's state machine per address.

Algorithms (``upstream.algorithm``):

- round-robin: Kong's wheel (each address ``weight / gcd`` times), but laid out by stride scheduling
  (entry ``k`` of an address with ``p`` points sits at ``(k + 0.5) / p``) instead of Kong's random
  shuffle, so the order is smooth and the same on every node; the pointer starts at a random place so
  that nodes do not move in lockstep. Exact weight proportions over every full turn of the wheel.
- least-connections: Kong's score ``(connections + 1) / weight``, lowest wins; ties go round the list
  (Kong's heap would keep picking the same one).
- consistent-hashing: a ring of ``max(slots, 1000)`` slots (Kong's continuum minimum), each owned by
  the address with the highest *weighted rendezvous* score for that slot. Kong places 160 points per
  address (Ketama) with a count that depends on the other targets' weights; rendezvous ownership
  depends only on each address's own weight, so removing (or reweighting) one address moves exactly
  the keys it owned and no others. Lookup: ``crc32(key) % size``, then, like Kong, walk the ring
  backwards past unavailable or already-tried addresses. Without a key (``hash_on: none``, or no value
  and no fallback), it behaves as weighted round-robin over the ring, as Kong's docs state (Kong's code
  hashes the empty string, sending all such traffic to one target).
- latency: Kong's peak-EWMA (decay 10 s) with power-of-two choices among available addresses, score
  ``ewma / weight``; ``on_release(address, elapsed)`` feeds it.

Health (lua-resty-healthcheck): each address is healthy, mostly_healthy, mostly_unhealthy or unhealthy;
the first two are selectable. A success clears the failure counters, a failure clears the success
counter; reaching a threshold flips the state; a threshold of 0 disables that counter. Healthy
addresses are probed every ``active.healthy.interval``, unhealthy ones every
``active.unhealthy.interval``. Passive checks cannot bring an address back by themselves (an unhealthy
address gets no traffic to succeed with): only active probes or ``set_health`` do, as in Kong.
``healthchecks.threshold``: the upstream is unhealthy (``select`` returns None) when its available
weight is below ``threshold`` percent of its total weight; Kong's docs say "less than", its code says
"not more than" (which makes 100 unusable): we follow the docs.
"""

from __future__ import annotations

import math
import random
import time
import uuid
import zlib
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from hashlib import shake_128
from typing import Any, ClassVar, Final, Literal
from urllib.parse import unquote_plus

from mypy_extensions import mypyc_attr

from zonegate.core.config import Config
from zonegate.core.net import parse_host_port
from zonegate.core.schema import Entity

__all__ = [
    "ActiveCheck",
    "Address",
    "Balancers",
    "ConsistentHashingBalancer",
    "HealthListener",
    "HealthSource",
    "LatencyBalancer",
    "LeastConnectionsBalancer",
    "NewHashCookie",
    "Outcome",
    "RoundRobinBalancer",
    "UpstreamBalancer",
]

Outcome = int | Literal["timeout", "tcp_failure", "success"]
"""What a request or probe produced: an HTTP status (0: unparsable response), a timeout, a TCP/TLS
failure, or "success" (a TCP-only check connected)."""

HealthSource = Literal["active", "passive", "manual"]

# lua-resty-healthcheck's internal states, ordered so that ``state <= _MOSTLY_HEALTHY`` is "selectable".
_HEALTHY: Final = 0
_MOSTLY_HEALTHY: Final = 1
_MOSTLY_UNHEALTHY: Final = 2
_UNHEALTHY: Final = 3
_COUNTER_MAX: Final = 255  # the checker keeps 8-bit counters
_TCP: Final = 1
_TIMEOUT: Final = 2
_HTTP: Final = 3

_RING_MIN_SIZE: Final = 1000  # Kong's MIN_CONTINUUM_SIZE: fewer slots give a lumpy distribution
# Beyond this many wheel entries (coprime weights such as 65535 and 65534), points are scaled down:
# proportions stay within 1/16384 and building the wheel stays a few milliseconds.
_MAX_WHEEL: Final = 1 << 14
_EWMA_DECAY_SECONDS: Final = 10.0  # Kong's latency.lua DECAY_TIME
_TWO_POW_MINUS_64: Final = 2.0**-64
_NO_TRIED: Final[frozenset[Any]] = frozenset()

HEALTHY: Final = "HEALTHY"
UNHEALTHY: Final = "UNHEALTHY"
HEALTHCHECKS_OFF: Final = "HEALTHCHECKS_OFF"
DNS_ERROR: Final = "DNS_ERROR"


# -- per-address state that survives rebuilds -------------------------------------------------------


class _Shared:
    """What every balancer built for one upstream id shares: peers, a health generation, the ring."""

    __slots__ = ("generation", "listener", "peers", "ring")

    def __init__(self) -> None:
        # Bumped whenever an address changes availability; balancers compare it to their own copy to
        # know, with one integer compare per select, that their cached upstream health is stale.
        self.generation = 0
        self.peers: dict[tuple[str, str, int], _Peer] = {}
        self.ring: tuple[tuple[Any, ...], list[int]] | None = None
        self.listener: HealthListener | None = None


class _Peer:
    """Health counters, state and in-flight connections of one (target, IP, port)."""

    __slots__ = (
        "available",
        "connections",
        "ewma",
        "ewma_at",
        "http_failures",
        "shared",
        "state",
        "successes",
        "tcp_failures",
        "timeouts",
    )

    def __init__(self, shared: _Shared) -> None:
        self.shared = shared
        self.available = True  # Kong adds targets as healthy
        self.state = _HEALTHY
        self.successes = self.tcp_failures = self.timeouts = self.http_failures = 0
        self.connections = 0
        self.ewma = 0.0
        self.ewma_at = 0.0

    def count(self, healthy: bool, counter: int, limit: int) -> bool:
        """lua-resty-healthcheck's ``incr_counter``; True when availability flipped."""
        state = self.state
        if healthy:
            if state == _HEALTHY:
                return False  # nothing to count when fully healthy
            self.successes = value = min(self.successes + 1, _COUNTER_MAX)
            self.tcp_failures = self.timeouts = self.http_failures = 0
        else:
            if state == _UNHEALTHY:
                return False
            self.successes = 0
            if counter == _TCP:
                self.tcp_failures = value = min(self.tcp_failures + 1, _COUNTER_MAX)
            elif counter == _TIMEOUT:
                self.timeouts = value = min(self.timeouts + 1, _COUNTER_MAX)
            else:
                self.http_failures = value = min(self.http_failures + 1, _COUNTER_MAX)
        if value >= limit:
            new = _HEALTHY if healthy else _UNHEALTHY
        elif state == _HEALTHY:
            new = _MOSTLY_HEALTHY  # a failure below the threshold: still selectable
        elif state == _UNHEALTHY:
            new = _MOSTLY_UNHEALTHY  # a success below the threshold: still skipped
        else:
            return False
        self.state = new
        return self._set_available(new <= _MOSTLY_HEALTHY)

    def force(self, healthy: bool) -> bool:
        """Kong's ``set_target_status``: set the state and clear every counter."""
        self.state = _HEALTHY if healthy else _UNHEALTHY
        self.successes = self.tcp_failures = self.timeouts = self.http_failures = 0
        return self._set_available(healthy)

    def _set_available(self, available: bool) -> bool:
        if available == self.available:
            return False
        self.available = available
        self.shared.generation += 1
        return True


class Address:
    """One IP:port of a target: what ``select`` returns and what the proxy connects to.

    ``host`` is the resolved IP (no brackets), ``port`` the port, ``target`` the target as configured
    (``"name:port"`` or ``"[v6]:port"``), ``hostname`` the target's host part as written (the name, or
    the IP with IPv6 in brackets: what Kong sends as Host when the upstream has no ``host_header``),
    ``weight`` the target's weight. Identity is the object: the proxy's ``tried`` set holds these.
    """

    __slots__ = ("_peer", "host", "hostname", "port", "target", "weight")

    def __init__(self, host: str, port: int, target: str, weight: int, hostname: str, peer: _Peer) -> None:
        self.host = host
        self.port = port
        self.target = target
        self.weight = weight
        self.hostname = hostname
        self._peer = peer

    @property
    def healthy(self) -> bool:
        return self._peer.available

    @property
    def connections(self) -> int:
        return self._peer.connections

    def __repr__(self) -> str:
        state = "healthy" if self._peer.available else "unhealthy"
        return f"<Address {self.host}:{self.port} of {self.target} weight={self.weight} {state}>"


HealthListener = Callable[["UpstreamBalancer", Address, bool, HealthSource], None]
"""Called synchronously when an address becomes available (True) or unavailable (False). Must not raise:
passive reports call it from the proxy's request path."""


# -- configuration, parsed once ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rules:
    healthy_statuses: frozenset[int]
    unhealthy_statuses: frozenset[int]
    successes: int
    tcp_failures: int
    timeouts: int
    http_failures: int


@dataclass(frozen=True, slots=True)
class ActiveCheck:
    """``healthchecks.active`` as the prober needs it (None on a balancer when both intervals are 0)."""

    type: str
    timeout: float
    concurrency: int
    http_path: str
    https_sni: str | None
    https_verify_certificate: bool
    headers: tuple[tuple[str, str], ...]
    healthy_interval: float
    unhealthy_interval: float


def _rules(section: Mapping[str, Any]) -> _Rules:
    healthy, unhealthy = section["healthy"], section["unhealthy"]
    return _Rules(
        healthy_statuses=frozenset(healthy["http_statuses"] or ()),
        unhealthy_statuses=frozenset(unhealthy["http_statuses"] or ()),
        successes=healthy["successes"],
        tcp_failures=unhealthy["tcp_failures"],
        timeouts=unhealthy["timeouts"],
        http_failures=unhealthy["http_failures"],
    )


def _active_check(active: Mapping[str, Any]) -> ActiveCheck | None:
    healthy_interval = float(active["healthy"]["interval"])
    unhealthy_interval = float(active["unhealthy"]["interval"])
    if healthy_interval <= 0 and unhealthy_interval <= 0:
        return None
    headers = tuple(
        (name, str(value)) for name, values in sorted((active["headers"] or {}).items()) for value in values
    )
    return ActiveCheck(
        type=active["type"],
        timeout=float(active["timeout"]),
        concurrency=int(active["concurrency"]),
        http_path=active["http_path"],
        https_sni=active["https_sni"],
        https_verify_certificate=bool(active["https_verify_certificate"]),
        headers=headers,
        healthy_interval=healthy_interval,
        unhealthy_interval=unhealthy_interval,
    )


def _healthchecks_on(checks: Mapping[str, Any]) -> bool:
    """Kong's ``is_upstream_using_healthcheck``: probes scheduled, or a passive failure counter set."""
    active, passive = checks["active"], checks["passive"]["unhealthy"]
    return bool(
        active["healthy"]["interval"]
        or active["unhealthy"]["interval"]
        or passive["tcp_failures"]
        or passive["timeouts"]
        or passive["http_failures"]
    )


# -- hash keys -------------------------------------------------------------------------------------


# A str subclass cannot be a compiled (native) class: this one stays a plain Python class.
@mypyc_attr(native_class=False)
class NewHashCookie(str):
    """A hash key minted because the request lacked the ``hash_on_cookie`` cookie (Kong mints a UUID).

    The proxy must then add ``Set-Cookie: balancer.hash_cookie_header(key)`` to the response, so the
    client comes back to the same target. It is a ``str``: pass it to ``select`` like any key.
    """

    __slots__ = ()


HeaderLookup = Mapping[str, str] | Callable[[str], str | None]
"""Request headers: a mapping with lower-case names (repeated headers joined with ", "), or a function
taking a lower-case name."""


def _header(headers: HeaderLookup | None, name: str) -> str | None:
    if headers is None:
        return None
    if callable(headers):
        return headers(name)
    return headers.get(name)


def _cookie(cookies: Mapping[str, str] | None, headers: HeaderLookup | None, name: str) -> str | None:
    if cookies is not None:
        return cookies.get(name)
    raw = _header(headers, "cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


def _query_arg(query: Mapping[str, str | Sequence[str]] | str | None, name: str) -> str | None:
    """Kong's ``get_query_arg``: a bare ``?a`` is "true", repeated args are sorted and joined with ","."""
    if query is None:
        return None
    if isinstance(query, str):
        values: list[str] = []
        for part in query.split("&"):
            if not part:
                continue
            key, sep, value = part.partition("=")
            if unquote_plus(key) == name:
                values.append(unquote_plus(value) if sep else "true")
        if not values:
            return None
        return values[0] if len(values) == 1 else ",".join(sorted(values))
    found = query.get(name)
    if found is None or isinstance(found, str):
        return found
    return ",".join(sorted(found))


_HashSpec = tuple[tuple[str, str], ...]  # (input, its field's value or "")


def _hash_spec(upstream: Entity) -> _HashSpec:
    """(input, field) for hash_on then hash_fallback, as Kong's ``get_value_to_hash`` walks them."""
    if upstream["algorithm"] != "consistent-hashing" or upstream["hash_on"] == "none":
        return ()
    spec: list[tuple[str, str]] = []
    for kind, prefix in ((upstream["hash_on"], "hash_on"), (upstream["hash_fallback"], "hash_fallback")):
        if kind == "none":
            break
        if kind == "header":
            param = str(upstream[f"{prefix}_header"]).lower()
        elif kind == "cookie":
            param = str(upstream["hash_on_cookie"])  # Kong has one cookie field for both
        elif kind in ("query_arg", "uri_capture"):
            param = str(upstream[f"{prefix}_{kind}"])
        else:
            param = ""
        spec.append((kind, param))
    return tuple(spec)


# -- targets ----------------------------------------------------------------------------------------


class _Target:
    """One target entity and its current addresses."""

    __slots__ = ("addresses", "dns", "dns_name", "entity", "host", "hostname", "port", "target", "weight")

    def __init__(self, entity: Entity) -> None:
        self.entity = entity
        self.target: str = entity["target"]
        self.weight: int = entity["weight"]
        parsed = parse_host_port(self.target)
        self.host = parsed.host
        self.port = parsed.port if parsed.port is not None else 8000
        self.hostname = f"[{parsed.host}]" if parsed.type == "ipv6" else parsed.host
        # Resolved names are keyed in lower case: DNS ignores case, and two spellings share one lookup.
        self.dns_name: str | None = None if parsed.type != "name" else parsed.host.lower()
        self.dns: str = "unknown"  # Kong's record type name ("A", "AAAA"), or the DNS error
        self.addresses: tuple[Address, ...] = ()


_DnsState = tuple[tuple[str, ...], str | None, str | None]  # addresses, record type, error


def _dns_label(addresses: tuple[str, ...], record_type: str | None, error: str | None) -> str:
    if error is not None and not addresses:
        return error
    if record_type is not None:
        return record_type
    return "unknown" if not addresses else ("AAAA" if ":" in addresses[0] else "A")


# -- the balancers ----------------------------------------------------------------------------------


class UpstreamBalancer:
    """The balancer of one upstream. Use ``Balancers.build``; subclasses implement ``select``."""

    algorithm: ClassVar[str] = ""

    __slots__ = (
        "_active",
        "_available_weight",
        "_by_key",
        "_hash",
        "_hc_on",
        "_live",
        "_passive",
        "_passive_on",
        "_seen",
        "_shared",
        "_targets",
        "_threshold",
        "_total_weight",
        "_upstream_healthy",
        "_usable",
        "active_check",
        "entity",
        "hash_cookie",
        "hashes",
        "host_header",
        "id",
        "name",
    )

    def __init__(self, upstream: Entity, targets: Sequence[_Target], shared: _Shared) -> None:
        self.entity = upstream
        self.id: str = upstream["id"]
        self.name: str = upstream["name"]
        self.host_header: str | None = upstream["host_header"]
        checks = upstream["healthchecks"]
        self._hc_on = _healthchecks_on(checks)
        self._active = _rules(checks["active"])
        self._passive = _rules(checks["passive"])
        passive = self._passive
        self._passive_on = self._hc_on and bool(
            passive.successes or passive.tcp_failures or passive.timeouts or passive.http_failures
        )
        self.active_check: ActiveCheck | None = _active_check(checks["active"]) if self._hc_on else None
        self._threshold = float(checks["threshold"] or 0)
        self._hash = _hash_spec(upstream)
        # True when ``hash_key`` can return a key: the proxy may skip gathering its inputs otherwise.
        self.hashes = bool(self._hash)
        self.hash_cookie: tuple[str, str] | None = (
            (upstream["hash_on_cookie"], upstream["hash_on_cookie_path"] or "/")
            if any(kind == "cookie" for kind, _ in self._hash)
            else None
        )
        self._shared = shared
        self._targets = tuple(targets)
        self._by_key: dict[tuple[str, str, int], Address] = {}
        self._live: tuple[Address, ...] = ()
        self._seen = -1
        self._usable = False
        self._upstream_healthy = False
        self._available_weight = self._total_weight = 0

    # -- hot path -------------------------------------------------------------------------------

    def select(self, hash_key: str | None = None, tried: frozenset[Address] = _NO_TRIED) -> Address | None:
        """An available address not in ``tried`` (or, when all were tried, an available one), or None."""
        raise NotImplementedError

    def hash_key(
        self,
        *,
        consumer_id: str | None = None,
        credential_id: str | None = None,
        client_ip: str | None = None,
        headers: HeaderLookup | None = None,
        cookies: Mapping[str, str] | None = None,
        path: str | None = None,
        query: Mapping[str, str | Sequence[str]] | str | None = None,
        uri_captures: Mapping[str, str] | None = None,
    ) -> str | None:
        """The value to hash for this request: ``hash_on``, else ``hash_fallback`` (Kong's order).

        ``consumer`` is the authenticated consumer's id, else the credential's. ``query`` is the raw
        query string or a mapping. ``cookies`` defaults to parsing the Cookie header. Compute it once
        per request and reuse it on retries. A missing hash cookie yields a ``NewHashCookie``.
        """
        for kind, param in self._hash:
            value: str | None
            if kind == "header":
                value = _header(headers, param)
            elif kind == "ip":
                value = client_ip
            elif kind == "consumer":
                value = consumer_id if consumer_id is not None else credential_id
            elif kind == "cookie":
                value = _cookie(cookies, headers, param)
                if value is None:
                    return NewHashCookie(str(uuid.uuid4()))
            elif kind == "path":
                value = path
            elif kind == "query_arg":
                value = _query_arg(query, param)
            else:  # uri_capture
                value = uri_captures.get(param) if uri_captures is not None else None
            if value is not None:
                return value
        return None

    def hash_cookie_header(self, value: str) -> str:
        """The Set-Cookie value for a minted hash cookie (Kong's, with SameSite spelled right)."""
        if self.hash_cookie is None:
            raise ValueError(f"upstream {self.name} does not hash on a cookie")
        name, path = self.hash_cookie
        return f"{name}={value}; Path={path}; SameSite=Lax; HttpOnly"

    def on_connect(self, address: Address) -> None:
        """A request started using ``address`` (least-connections counts it until ``on_release``)."""
        address._peer.connections += 1

    def on_release(self, address: Address, elapsed: float | None = None) -> None:
        """The request on ``address`` is done; ``elapsed`` (connect + response seconds) feeds latency."""
        peer = address._peer
        if peer.connections > 0:
            peer.connections -= 1

    def report(self, address: Address, outcome: Outcome) -> None:
        """Passive health check: a proxied request's outcome (HTTP status, "timeout", "tcp_failure")."""
        if self._passive_on:
            self._count(address, outcome, self._passive, "passive")

    # -- health ---------------------------------------------------------------------------------

    def record_probe(self, address: Address, outcome: Outcome) -> None:
        """Active health check: the outcome of a probe ("success" for a TCP-only check that connected)."""
        if self.active_check is not None:
            self._count(address, outcome, self._active, "active")

    def _count(self, address: Address, outcome: Outcome, rules: _Rules, source: HealthSource) -> None:
        if isinstance(outcome, int):
            if outcome in rules.healthy_statuses:
                healthy, counter, limit = True, 0, rules.successes
            elif outcome in rules.unhealthy_statuses or outcome == 0:
                healthy, counter, limit = False, _HTTP, rules.http_failures
            else:
                return  # neither list: ignored, as lua-resty-healthcheck does
        elif outcome == "timeout":
            healthy, counter, limit = False, _TIMEOUT, rules.timeouts
        elif outcome == "tcp_failure":
            healthy, counter, limit = False, _TCP, rules.tcp_failures
        else:
            healthy, counter, limit = True, 0, rules.successes
        if limit and address._peer.count(healthy, counter, limit):
            self._notify(address, healthy, source)

    def set_health(self, target: str, healthy: bool, ip: str | None = None) -> int:
        """Force the state of a target's addresses (or of one IP), like Kong's ``/healthy`` endpoints.

        ``target`` is the target string or its id. Returns how many addresses matched. Raises
        ValueError when the upstream has no health checks (Kong answers 400 "no healthchecker found").
        """
        if not self._hc_on:
            raise ValueError(f"no healthchecker found for {self.name}")
        matched = 0
        for item in self._targets:
            if item.target != target and item.entity["id"] != target:
                continue
            for address in item.addresses:
                if ip is None or address.host == ip:
                    matched += 1
                    if address._peer.force(healthy):
                        self._notify(address, healthy, "manual")
        return matched

    def _notify(self, address: Address, healthy: bool, source: HealthSource) -> None:
        listener = address._peer.shared.listener
        if listener is not None:
            listener(self, address, healthy, source)

    @property
    def healthy(self) -> bool:
        """The upstream's own health: available weight at or above ``threshold`` percent."""
        self._check()
        return self._upstream_healthy

    def probe_targets(self, healthy: bool) -> list[Address]:
        """Addresses the prober should check now: available ones (healthy=True) or the others."""
        return [address for address in self._live if address._peer.available is healthy]

    def addresses(self) -> tuple[Address, ...]:
        """Every selectable address (weight > 0), in target order."""
        return self._live

    def health(self) -> list[dict[str, Any]]:
        """Kong's ``GET /upstreams/{name}/health`` ``data``: each target entity plus ``health`` and ``data``.

        ``health`` is HEALTHY if any address is, UNHEALTHY if all are, HEALTHCHECKS_OFF when the upstream
        has no health checks, DNS_ERROR when the target has no address.
        """
        self._check()
        result = []
        for item in self._targets:
            data = self._target_status(item)
            if not item.addresses:
                health = DNS_ERROR
            else:
                health = HEALTHCHECKS_OFF
                for address in data["addresses"]:
                    if address["health"] == HEALTHY:
                        health = HEALTHY
                        break
                    if address["health"] == UNHEALTHY:
                        health = UNHEALTHY
            result.append({**item.entity, "health": health, "data": data})
        return result

    def balancer_health(self) -> dict[str, Any]:
        """Kong's ``GET /upstreams/{name}/health?balancer_health=1`` ``data``."""
        self._check()
        if not self._hc_on:
            return {"id": self.id, "health": HEALTHCHECKS_OFF}
        return {
            "id": self.id,
            "health": HEALTHY if self._upstream_healthy else UNHEALTHY,
            "details": {
                "healthy": self._upstream_healthy,
                "weight": _weights(self._total_weight, self._available_weight),
                "hosts": [self._target_status(item) for item in self._targets],
            },
        }

    def _target_status(self, item: _Target) -> dict[str, Any]:
        addresses = []
        total = available = 0
        for address in item.addresses:
            total += address.weight
            if address._peer.available:
                available += address.weight
            if not self._hc_on:
                health = HEALTHCHECKS_OFF
            else:
                health = HEALTHY if address._peer.available else UNHEALTHY
            addresses.append(
                {"ip": address.host, "port": address.port, "weight": address.weight, "health": health}
            )
        return {
            "host": item.hostname,
            "port": item.port,
            "dns": item.dns,
            "nodeWeight": item.weight,
            "weight": _weights(total, available),
            "addresses": addresses,
        }

    # -- building ---------------------------------------------------------------------------------

    def _check(self) -> None:
        if self._seen != self._shared.generation:
            self._refresh()

    def _refresh(self) -> None:
        total = available = 0
        for address in self._live:
            total += address.weight
            if address._peer.available:
                available += address.weight
        self._total_weight, self._available_weight = total, available
        self._upstream_healthy = total > 0 and available * 100 >= self._threshold * total
        self._usable = self._upstream_healthy and available > 0
        self._seen = self._shared.generation

    def _set_addresses(self, item: _Target, ips: Sequence[str], previous: Mapping[Any, Address]) -> None:
        """Give ``item`` one address per IP, reusing Address objects and peers that already exist."""
        shared = self._shared
        addresses = []
        for ip in ips:
            key = (item.target, ip, item.port)
            old = previous.get(key)
            if old is not None and old.weight == item.weight and old.hostname == item.hostname:
                address = old  # same identity: a retry's ``tried`` set keeps working across rebuilds
            else:
                peer = shared.peers.get(key)
                if peer is None:
                    peer = shared.peers[key] = _Peer(shared)
                address = Address(ip, item.port, item.target, item.weight, item.hostname, peer)
            addresses.append(address)
            self._by_key[key] = address
        item.addresses = tuple(addresses)

    def _apply_dns(self, name: str, state: _DnsState) -> bool:
        ips, record_type, error = state
        changed = False
        for item in self._targets:
            if item.dns_name != name:
                continue
            item.dns = _dns_label(ips, record_type, error)
            if tuple(a.host for a in item.addresses) != ips:
                self._set_addresses(item, ips, self._by_key)
                changed = True
        if changed:
            self._rebuild()
        return changed

    def _rebuild(self) -> None:
        """Recompute the selectable addresses and the algorithm's tables (after targets or DNS changed)."""
        self._live = tuple(a for item in self._targets for a in item.addresses if a.weight > 0)
        live_keys = {(a.target, a.host, a.port) for item in self._targets for a in item.addresses}
        self._by_key = {key: a for key, a in self._by_key.items() if key in live_keys}
        self._shared.peers = {key: a._peer for key, a in self._by_key.items()}
        self._build_tables()
        self._shared.generation += 1  # every balancer of this upstream re-reads its weights
        self._refresh()

    def _build_tables(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} addresses={len(self._live)}>"


def _weights(total: int, available: int) -> dict[str, int]:
    return {"total": total, "available": available, "unavailable": total - available}


class RoundRobinBalancer(UpstreamBalancer):
    """Weighted round-robin over a smooth wheel; see the module docstring."""

    algorithm: ClassVar[str] = "round-robin"
    __slots__ = ("_pointer", "_wheel")

    def __init__(self, upstream: Entity, targets: Sequence[_Target], shared: _Shared) -> None:
        super().__init__(upstream, targets, shared)
        self._wheel: list[Address] = []
        self._pointer = 0

    def _build_tables(self) -> None:
        self._wheel = _wheel(self._live)
        self._pointer = random.randrange(len(self._wheel)) if self._wheel else 0

    def select(self, hash_key: str | None = None, tried: frozenset[Address] = _NO_TRIED) -> Address | None:
        if self._seen != self._shared.generation:
            self._refresh()
        if not self._usable:
            return None
        wheel = self._wheel
        size = len(wheel)
        index = self._pointer
        spare = -1
        for _ in range(size):
            index += 1
            if index == size:
                index = 0
            address = wheel[index]
            if address._peer.available:
                if address not in tried:
                    self._pointer = index
                    return address
                if spare < 0:
                    spare = index
        if spare < 0:
            return None
        self._pointer = spare
        return wheel[spare]


def _wheel(addresses: Sequence[Address]) -> list[Address]:
    """Each address ``weight / gcd`` times, entries of an address spread evenly (stride scheduling)."""
    if not addresses:
        return []
    divisor = 0
    for address in addresses:
        divisor = math.gcd(divisor, address.weight)
    points = [address.weight // divisor for address in addresses]
    total = sum(points)
    if total > _MAX_WHEEL:
        points = [max(1, round(p * _MAX_WHEEL / total)) for p in points]
    entries: list[tuple[float, int]] = []
    for index, count in enumerate(points):
        step = 1.0 / count
        entries.extend(((k + 0.5) * step, index) for k in range(count))
    entries.sort()
    return [addresses[index] for _, index in entries]


class LeastConnectionsBalancer(UpstreamBalancer):
    """Fewest ``(connections + 1) / weight`` wins (Kong's formula: the +1 lets weight break the 0-0 tie)."""

    algorithm: ClassVar[str] = "least-connections"
    __slots__ = ("_doubled", "_rotor")

    def __init__(self, upstream: Entity, targets: Sequence[_Target], shared: _Shared) -> None:
        super().__init__(upstream, targets, shared)
        self._doubled: tuple[Address, ...] = ()
        self._rotor = 0

    def _build_tables(self) -> None:
        # Twice the list, so that a scan starting anywhere is one slice-free loop.
        self._doubled = self._live + self._live
        self._rotor = 0

    def select(self, hash_key: str | None = None, tried: frozenset[Address] = _NO_TRIED) -> Address | None:
        if self._seen != self._shared.generation:
            self._refresh()
        if not self._usable:
            return None
        doubled = self._doubled
        count = len(self._live)
        # Start each scan one further along, so equal scores take turns instead of piling on the first.
        start = self._rotor = self._rotor + 1 if self._rotor + 1 < count else 0
        best: Address | None = None
        spare: Address | None = None
        best_score = spare_score = math.inf
        for index in range(start, start + count):
            address = doubled[index]
            peer = address._peer
            if not peer.available:
                continue
            score = (peer.connections + 1) / address.weight
            if address in tried:
                if score < spare_score:
                    spare, spare_score = address, score
            elif score < best_score:
                best, best_score = address, score
        return best if best is not None else spare


class ConsistentHashingBalancer(UpstreamBalancer):
    """A ring of ``max(slots, 1000)`` slots owned by weighted rendezvous hashing; see the module docstring."""

    algorithm: ClassVar[str] = "consistent-hashing"
    __slots__ = ("_pointer", "_ring", "_stride")

    def __init__(self, upstream: Entity, targets: Sequence[_Target], shared: _Shared) -> None:
        super().__init__(upstream, targets, shared)
        self._ring: list[Address] = []
        self._pointer = 0
        self._stride = 1

    @property
    def ring_size(self) -> int:
        return max(int(self.entity["slots"]), _RING_MIN_SIZE)

    def _build_tables(self) -> None:
        live = self._live
        if not live:
            self._ring = []
            return
        size = self.ring_size
        signature = (size, tuple((_ring_key(a), a.weight) for a in live))
        cached = self._shared.ring
        if cached is not None and cached[0] == signature:
            owners = cached[1]  # same addresses and weights: skip the O(slots x addresses) build
        else:
            owners = _rendezvous_owners([_ring_key(a) for a in live], [a.weight for a in live], size)
            self._shared.ring = (signature, owners)
        self._ring = [live[owner] for owner in owners]
        # Keyless requests step through the ring by a stride coprime with its size: every slot once per
        # turn, so traffic splits in proportion to the slots each address owns (its weight).
        stride = 7919
        while math.gcd(stride, size) != 1:
            stride += 2
        self._stride = stride
        self._pointer = random.randrange(size)

    def slot(self, hash_key: str) -> int:
        """The ring slot of a key (the same on every node: crc32 is fixed, Python's hash() is not)."""
        return zlib.crc32(hash_key.encode("utf-8", "surrogatepass")) % len(self._ring)

    def select(self, hash_key: str | None = None, tried: frozenset[Address] = _NO_TRIED) -> Address | None:
        if self._seen != self._shared.generation:
            self._refresh()
        if not self._usable:
            return None
        ring = self._ring
        size = len(ring)
        if hash_key is None:
            index = self._pointer = (self._pointer + self._stride) % size
        else:
            index = zlib.crc32(hash_key.encode("utf-8", "surrogatepass")) % size
        address = ring[index]
        available = address._peer.available
        if available and address not in tried:
            return address
        # Kong walks the continuum backwards from the key's slot until an address is available.
        spare = address if available else None
        for _ in range(size - 1):
            index = index - 1 if index else size - 1
            address = ring[index]
            if address._peer.available:
                if address not in tried:
                    return address
                if spare is None:
                    spare = address
        return spare


def _ring_key(address: Address) -> bytes:
    # Kong hashes "ip:port": the same backend reached through two spellings of a target owns the same
    # slots on every node.
    return f"{address.host}:{address.port}".encode()


def _rendezvous_owners(keys: Sequence[bytes], weights: Sequence[int], size: int) -> list[int]:
    """For each slot, the index of the key with the highest weighted rendezvous score.

    Each key draws one 64-bit uniform ``v`` per slot (SHAKE-128 of the key: the same on every node);
    its score is ``ln(u) / weight`` with ``u = (v + 1) / 2**64``, the highest wins, so a key owns a
    slot with probability ``weight / total``. Within keys of equal weight the raw ``v`` orders the
    same way, so the logarithms are taken only for each weight group's winner.
    """
    count = len(keys)
    if count == 1:
        return [0] * size
    columns = [array("Q", shake_128(key).digest(8 * size)) for key in keys]
    groups: dict[int, list[int]] = {}
    for index, weight in enumerate(weights):
        groups.setdefault(weight, []).append(index)
    group_owners: list[list[int]] = []
    group_best: list[Sequence[int]] = []
    for members in groups.values():
        if len(members) == 1:
            group_owners.append([members[0]] * size)
            group_best.append(columns[members[0]])
            continue
        rows = list(zip(*(columns[index] for index in members), strict=True))
        best = list(map(max, rows))
        local = list(map(tuple.index, rows, best))
        group_owners.append([members[j] for j in local])
        group_best.append(best)
    if len(group_owners) == 1:
        return group_owners[0]
    log = math.log
    scores = []
    for weight, best_values in zip(groups, group_best, strict=True):
        inverse = 1.0 / weight
        scores.append([log((v + 1) * _TWO_POW_MINUS_64) * inverse for v in best_values])
    rows_f = list(zip(*scores, strict=True))
    winners = list(map(tuple.index, rows_f, map(max, rows_f)))
    return [group_owners[group][slot] for slot, group in enumerate(winners)]


class LatencyBalancer(UpstreamBalancer):
    """Kong's ``latency`` algorithm: peak-EWMA of response times, power of two random choices."""

    algorithm: ClassVar[str] = "latency"
    __slots__ = ()

    def _build_tables(self) -> None:
        # Kong's slow start: a new address begins at the average of the others, not at 0 (which would
        # send it every request until its first response came back).
        known = [a._peer.ewma for a in self._live if a._peer.ewma_at > 0]
        if known:
            average, now = sum(known) / len(known), time.monotonic()
            for address in self._live:
                if address._peer.ewma_at == 0:
                    address._peer.ewma, address._peer.ewma_at = average, now

    def select(self, hash_key: str | None = None, tried: frozenset[Address] = _NO_TRIED) -> Address | None:
        if self._seen != self._shared.generation:
            self._refresh()
        if not self._usable:
            return None
        candidates = [a for a in self._live if a._peer.available and a not in tried]
        if not candidates:
            candidates = [a for a in self._live if a._peer.available]
        count = len(candidates)
        if count == 1:
            return candidates[0]
        first = random.randrange(count)
        second = random.randrange(count - 1)
        second += second >= first
        a, b = candidates[first], candidates[second]
        now = time.monotonic()
        return a if _decayed(a, now) / a.weight <= _decayed(b, now) / b.weight else b

    def on_release(self, address: Address, elapsed: float | None = None) -> None:
        super().on_release(address, elapsed)
        if elapsed is not None:
            peer = address._peer
            now = time.monotonic()
            weight = math.exp(-max(now - peer.ewma_at, 0.0) / _EWMA_DECAY_SECONDS)
            peer.ewma = peer.ewma * weight + elapsed * (1.0 - weight)
            peer.ewma_at = now


def _decayed(address: Address, now: float) -> float:
    """The EWMA as it stands now (decaying towards 0 while nothing is measured, as Kong's does)."""
    peer = address._peer
    return peer.ewma * math.exp(-max(now - peer.ewma_at, 0.0) / _EWMA_DECAY_SECONDS)


_ALGORITHMS: Final[Mapping[str, type[UpstreamBalancer]]] = {
    cls.algorithm: cls
    for cls in (RoundRobinBalancer, LeastConnectionsBalancer, ConsistentHashingBalancer, LatencyBalancer)
}


class Balancers:
    """Every upstream's balancer for one config. Immutable set of upstreams; addresses follow DNS."""

    __slots__ = ("_by_id", "_by_name", "_dns", "_listener")

    def __init__(
        self,
        by_id: dict[str, UpstreamBalancer],
        dns: dict[str, _DnsState],
        listener: HealthListener | None,
    ) -> None:
        self._by_id = by_id
        # Upstream names are host names: matched exactly first, then case-insensitively.
        self._by_name: dict[str, UpstreamBalancer] = {}
        for balancer in by_id.values():
            self._by_name.setdefault(balancer.name.lower(), balancer)
        for balancer in by_id.values():
            self._by_name[balancer.name] = balancer
        self._dns = dns
        self._listener = listener

    @classmethod
    def build(
        cls,
        config: Config,
        previous: Balancers | None = None,
        *,
        resolved: Mapping[str, Sequence[str]] | None = None,
    ) -> Balancers:
        """Balancers for every upstream of ``config``, keeping ``previous``'s per-address state.

        A target given by hostname takes its addresses from ``resolved`` (name -> IPs), else from what
        ``previous`` last resolved for that name, else has none until ``apply_dns`` (the health
        checker resolves names and keeps them fresh). Pure and synchronous: run it off the hot path.
        """
        dns: dict[str, _DnsState] = dict(previous._dns) if previous is not None else {}
        for name, ips in (resolved or {}).items():
            given = tuple(dict.fromkeys(ips))
            dns[name.lower()] = (given, _dns_label(given, None, None) if given else None, None)
        targets_by_upstream: dict[str, list[Entity]] = {}
        for target in config.of("targets"):
            targets_by_upstream.setdefault(target["upstream"]["id"], []).append(target)
        listener = previous._listener if previous is not None else None
        by_id: dict[str, UpstreamBalancer] = {}
        used_names: set[str] = set()
        for upstream in config.of("upstreams"):
            old = previous._by_id.get(upstream["id"]) if previous is not None else None
            shared = old._shared if old is not None else _Shared()
            if shared.listener is None:
                shared.listener = listener
            items = [_Target(entity) for entity in targets_by_upstream.get(upstream["id"], ())]
            # A stable order, whatever the ids: the ring and the wheel must be the same on every node.
            items.sort(key=lambda item: (item.target, item.entity["id"]))
            balancer = _ALGORITHMS[upstream["algorithm"]](upstream, items, shared)
            previous_addresses = old._by_key if old is not None else {}
            for item in items:
                if item.dns_name is None:
                    item.dns = "AAAA" if ":" in item.host else "A"
                    balancer._set_addresses(item, (item.host,), previous_addresses)
                    continue
                used_names.add(item.dns_name)
                state = dns.get(item.dns_name)
                if state is not None:
                    item.dns = _dns_label(*state)
                    balancer._set_addresses(item, state[0], previous_addresses)
            if not balancer._hc_on:
                # Health checks off: every address is in, whatever it went through before (Kong's
                # new balancer starts with every address available and no checker to say otherwise).
                for address in balancer._by_key.values():
                    address._peer.force(True)
            balancer._rebuild()
            by_id[upstream["id"]] = balancer
        return cls(by_id, {name: state for name, state in dns.items() if name in used_names}, listener)

    # -- lookups (hot path) ---------------------------------------------------------------------

    def get(self, upstream_name: str) -> UpstreamBalancer | None:
        """The balancer for a service's host, or None when the host is not an upstream (proxy directly)."""
        balancer = self._by_name.get(upstream_name)
        if balancer is None and not upstream_name.islower():
            balancer = self._by_name.get(upstream_name.lower())
        return balancer

    def by_id(self, upstream_id: str) -> UpstreamBalancer | None:
        return self._by_id.get(upstream_id)

    def __iter__(self) -> Iterator[UpstreamBalancer]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    # -- DNS and health wiring (off the hot path) ------------------------------------------------

    def hostnames(self) -> frozenset[str]:
        """Every target host name (lower case) that needs resolving."""
        return frozenset(
            item.dns_name for balancer in self for item in balancer._targets if item.dns_name is not None
        )

    def apply_dns(
        self,
        name: str,
        addresses: Sequence[str],
        *,
        record_type: str | None = None,
        error: str | None = None,
    ) -> bool:
        """New addresses for a host name: every target with that name follows. True if any changed."""
        key = name.lower()
        ips = tuple(dict.fromkeys(addresses))  # an address listed twice is still one address
        state: _DnsState = (ips, record_type, error)
        self._dns[key] = state
        changed = False
        for balancer in self:
            changed |= balancer._apply_dns(key, state)
        return changed

    def set_listener(self, listener: HealthListener | None) -> None:
        """Call ``listener`` on every availability change of every address (and of later builds)."""
        self._listener = listener
        for balancer in self:
            balancer._shared.listener = listener
