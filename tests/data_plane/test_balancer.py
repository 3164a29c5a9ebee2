"""The ring-balancer's algorithms, passive health, threshold and rebuilds (pure code, no sockets).

Kong: ``kong/runloop/balancer/round_robin.lua``, ``least_connections.lua``, ``latency.lua``,
``balancers.lua`` (``updateStatus``: the threshold), lua-resty-healthcheck's ``incr_counter``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from zonegate.core.config import Config
from zonegate.core.declarative import load
from zonegate.data_plane.balancer import (
    Address,
    Balancers,
    ConsistentHashingBalancer,
    LatencyBalancer,
    LeastConnectionsBalancer,
    RoundRobinBalancer,
    UpstreamBalancer,
)

# -- helpers (the other balancer and health test modules import them from here) ---------------------

NAME = "backend.internal"


def upstream(
    targets: Iterable[str | tuple[str, int]] = (), *, name: str = NAME, **fields: Any
) -> dict[str, Any]:
    """An upstream in Kong's declarative form; a target is "host:port" or ("host:port", weight)."""
    rendered = [{"target": t} if isinstance(t, str) else {"target": t[0], "weight": t[1]} for t in targets]
    return {"name": name, "targets": rendered, **fields}


def config(*upstreams: dict[str, Any]) -> Config:
    return load({"_format_version": "3.0", "upstreams": list(upstreams)})


def balancer_for(
    targets: Iterable[str | tuple[str, int]] = (), previous: Balancers | None = None, **fields: Any
) -> UpstreamBalancer:
    balancers = Balancers.build(config(upstream(targets, **fields)), previous)
    found = balancers.get(NAME)
    assert found is not None
    return found


def checks(
    *,
    active: dict[str, Any] | None = None,
    passive: dict[str, Any] | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """A ``healthchecks`` record; unspecified parts keep Kong's defaults (everything off)."""
    result: dict[str, Any] = {}
    if active is not None:
        result["active"] = active
    if passive is not None:
        result["passive"] = passive
    if threshold is not None:
        result["threshold"] = threshold
    return result


def picks(balancer: UpstreamBalancer, count: int, keys: Sequence[str | None] | None = None) -> Counter[str]:
    """How often each target was selected over ``count`` selections."""
    seen: Counter[str] = Counter()
    for index in range(count):
        address = balancer.select(keys[index] if keys is not None else None)
        assert address is not None
        seen[address.target] += 1
    return seen


def address_of(balancer: UpstreamBalancer, target: str) -> Address:
    return next(a for a in balancer.addresses() if a.target == target)


A, B, C, D = "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"
PASSIVE_3 = checks(
    passive={"unhealthy": {"http_failures": 3, "tcp_failures": 2, "timeouts": 2}, "healthy": {"successes": 2}}
)


# -- lookup --------------------------------------------------------------------------------------


def test_get_finds_upstreams_by_name_and_nothing_else() -> None:
    balancers = Balancers.build(config(upstream([A]), upstream([B], name="other.internal")))
    assert isinstance(balancers.get(NAME), RoundRobinBalancer)
    assert balancers.get("Backend.Internal") is balancers.get(NAME)  # host names ignore case
    assert balancers.get("example.com") is None  # a plain host: proxied directly
    assert balancers.get("10.0.0.1") is None
    assert len(balancers) == 2


@pytest.mark.parametrize(
    ("algorithm", "cls"),
    [
        ("round-robin", RoundRobinBalancer),
        ("least-connections", LeastConnectionsBalancer),
        ("consistent-hashing", ConsistentHashingBalancer),
        ("latency", LatencyBalancer),
    ],
)
def test_each_algorithm_has_its_balancer(algorithm: str, cls: type[UpstreamBalancer]) -> None:
    balancer = balancer_for([A], algorithm=algorithm)
    assert type(balancer) is cls
    address = balancer.select("key")
    assert address is not None
    assert (address.host, address.port, address.target, address.hostname, address.weight) == (
        "10.0.0.1",
        80,
        A,
        "10.0.0.1",
        100,
    )


def test_no_targets_means_no_peer() -> None:
    for algorithm in ("round-robin", "least-connections", "consistent-hashing", "latency"):
        assert balancer_for([], algorithm=algorithm).select("k") is None


def test_ipv6_target_connects_to_the_bare_address_and_keeps_brackets_for_host() -> None:
    address = balancer_for(["[::1]:8080"]).select()
    assert address is not None
    assert (address.host, address.port, address.hostname, address.target) == (
        "::1",
        8080,
        "[::1]",
        "[::1]:8080",
    )


# -- round-robin ---------------------------------------------------------------------------------


def test_round_robin_splits_exactly_by_weight_and_never_picks_weight_zero() -> None:
    balancer = balancer_for([(A, 10), (B, 20), (C, 30), (D, 0)])
    assert picks(balancer, 600) == {A: 100, B: 200, C: 300}


def test_round_robin_interleaves_instead_of_bursting() -> None:
    balancer = balancer_for([(A, 1), (B, 1), (C, 1)])
    sequence = [balancer.select() for _ in range(9)]
    assert all(sequence[i] is not sequence[i + 1] for i in range(8))


def test_round_robin_skips_tried_targets_then_falls_back_to_them() -> None:
    balancer = balancer_for([A, B])
    first = balancer.select()
    assert first is not None
    second = balancer.select(None, frozenset({first}))
    assert second is not None and second is not first
    # Every target tried: retry on one of them anyway (Kong's retries keep cycling).
    third = balancer.select(None, frozenset({first, second}))
    assert third in (first, second)


def test_large_coprime_weights_keep_their_proportions() -> None:
    # 131070 wheel entries scaled down to 16385: A and B take turns, C keeps its one entry.
    balancer = balancer_for([(A, 65535), (B, 65534), (C, 1)])
    assert picks(balancer, 16385) == {A: 8192, B: 8192, C: 1}


# -- least-connections ---------------------------------------------------------------------------


def test_least_connections_fills_by_weight_when_connections_stay_open() -> None:
    balancer = balancer_for([(A, 100), (B, 300), (C, 0)], algorithm="least-connections")
    held: list[Address] = []
    for _ in range(400):
        address = balancer.select()
        assert address is not None
        balancer.on_connect(address)
        held.append(address)
    counts = Counter(a.target for a in held)
    assert counts == {A: 100, B: 300}  # (connections + 1) / weight equalises exactly
    for address in held:
        balancer.on_release(address)
    assert all(a.connections == 0 for a in balancer.addresses())


def test_least_connections_prefers_the_idle_target() -> None:
    balancer = balancer_for([A, B], algorithm="least-connections")
    busy = address_of(balancer, A)
    for _ in range(3):
        balancer.on_connect(busy)
    assert [balancer.select().target for _ in range(5)] == [B] * 5  # type: ignore[union-attr]


def test_least_connections_takes_turns_on_ties() -> None:
    balancer = balancer_for([A, B, C], algorithm="least-connections")
    assert picks(balancer, 300) == {A: 100, B: 100, C: 100}


def test_least_connections_skips_tried() -> None:
    balancer = balancer_for([A, B], algorithm="least-connections")
    a = address_of(balancer, A)
    for _ in range(10):
        assert balancer.select(None, frozenset({a})) is address_of(balancer, B)


# -- latency ---------------------------------------------------------------------------------------


def test_latency_sends_most_traffic_to_the_fastest_target() -> None:
    balancer = balancer_for([A, B, C], algorithm="latency")
    for _ in range(5):
        for target, seconds in ((A, 0.5), (B, 0.01), (C, 0.5)):
            address = address_of(balancer, target)
            balancer.on_connect(address)
            balancer.on_release(address, seconds)
    counts = picks(balancer, 300)
    # B wins every pair it is drawn into: 2/3 of 300 expected (sd about 8); the bounds sit 6 sd away.
    assert counts[B] >= 150
    assert counts[A] + counts[C] >= 50  # power-of-two choices still spreads the rest


# -- passive health and threshold ------------------------------------------------------------------


def test_passive_failures_take_a_target_out_and_it_stays_out() -> None:
    balancer = balancer_for([A, B], healthchecks=PASSIVE_3)
    a = address_of(balancer, A)
    balancer.report(a, 500)
    balancer.report(a, 500)
    assert a.healthy  # mostly_healthy: still selectable
    balancer.report(a, 500)
    assert not a.healthy
    assert picks(balancer, 20) == {B: 20}
    # Kong's rule: passive checks never bring a target back by themselves. Only traffic could (in-flight
    # requests still finishing), and a skipped target gets none.
    assert picks(balancer, 20) == {B: 20}


def test_a_success_resets_the_failure_counters() -> None:
    balancer = balancer_for([A, B], healthchecks=PASSIVE_3)
    a = address_of(balancer, A)
    for _ in range(5):
        balancer.report(a, 500)
        balancer.report(a, 500)
        balancer.report(a, 200)  # clears the http failures before they reach 3
    assert a.healthy


def test_statuses_in_neither_list_are_ignored_and_zero_counts_as_a_failure() -> None:
    balancer = balancer_for([A, B], healthchecks=PASSIVE_3)
    a = address_of(balancer, A)
    for _ in range(10):
        balancer.report(a, 404)  # not in passive.unhealthy.http_statuses (429, 500, 503)
    assert a.healthy
    for _ in range(3):
        balancer.report(a, 0)  # an unparsable response
    assert not a.healthy


def test_tcp_failures_and_timeouts_have_their_own_thresholds() -> None:
    balancer = balancer_for([A, B, C], healthchecks=PASSIVE_3)
    a, b = address_of(balancer, A), address_of(balancer, B)
    balancer.report(a, "tcp_failure")
    balancer.report(a, "tcp_failure")
    balancer.report(b, "timeout")
    assert not a.healthy
    assert b.healthy
    balancer.report(b, "timeout")
    assert not b.healthy


def test_reports_do_nothing_when_health_checks_are_off() -> None:
    balancer = balancer_for([A, B])
    a = address_of(balancer, A)
    for _ in range(50):
        balancer.report(a, 500)
        balancer.report(a, "tcp_failure")
    assert a.healthy
    assert {entry["health"] for entry in balancer.health()} == {"HEALTHCHECKS_OFF"}
    assert balancer.balancer_health() == {"id": balancer.id, "health": "HEALTHCHECKS_OFF"}
    with pytest.raises(ValueError, match="no healthchecker found"):
        balancer.set_health(A, False)


def test_no_healthy_target_means_no_peer() -> None:
    balancer = balancer_for([A], healthchecks=PASSIVE_3)
    a = address_of(balancer, A)
    for _ in range(3):
        balancer.report(a, 503)
    assert balancer.select() is None
    assert balancer.set_health(A, True) == 1  # Kong's PUT .../targets/{target}/healthy
    assert balancer.select() is a


@pytest.mark.parametrize("algorithm", ["round-robin", "least-connections", "consistent-hashing", "latency"])
def test_threshold_takes_the_whole_upstream_out(algorithm: str) -> None:
    balancer = balancer_for([A, B, C, D], algorithm=algorithm, healthchecks={**PASSIVE_3, "threshold": 60})
    balancer.set_health(A, False)
    assert balancer.healthy  # 75% of the weight available
    assert balancer.select("k") is not None
    balancer.set_health(B, False)
    assert not balancer.healthy  # 50% < 60%: Kong's docs: the upstream answers 503
    assert balancer.select("k") is None
    assert balancer.balancer_health()["health"] == "UNHEALTHY"
    balancer.set_health(B, True)
    assert balancer.select("k") is not None


def test_threshold_compares_weight_not_target_count() -> None:
    balancer = balancer_for([(A, 300), (B, 100)], healthchecks={**PASSIVE_3, "threshold": 50})
    balancer.set_health(B, False)
    assert balancer.healthy  # 300 of 400
    balancer.set_health(B, True)
    balancer.set_health(A, False)
    assert not balancer.healthy  # 100 of 400
    assert balancer.select() is None


def test_consistent_hashing_moves_keys_of_an_unhealthy_target_and_brings_them_back() -> None:
    balancer = balancer_for([A, B, C], algorithm="consistent-hashing", hash_on="header", hash_on_header="x-k",
                            healthchecks=PASSIVE_3)  # fmt: skip
    keys = [f"user-{i}" for i in range(300)]
    before = {key: balancer.select(key) for key in keys}
    balancer.set_health(A, False)
    during = {key: balancer.select(key) for key in keys}
    assert all(during[k] is before[k] for k in keys if before[k].target != A)  # type: ignore[union-attr]
    assert all(during[k].target != A for k in keys)  # type: ignore[union-attr]
    balancer.set_health(A, True)
    assert {key: balancer.select(key) for key in keys} == before


# -- rebuilds keep state ----------------------------------------------------------------------------


def test_build_with_previous_keeps_health_and_connections_of_surviving_targets() -> None:
    first = Balancers.build(
        config(upstream([A, B, C], healthchecks=PASSIVE_3, algorithm="least-connections"))
    )
    old = first.get(NAME)
    assert old is not None
    a, b = address_of(old, A), address_of(old, B)
    old.set_health(A, False)
    old.on_connect(b)
    old.on_connect(b)

    second = Balancers.build(
        config(upstream([A, (B, 50), D], healthchecks=PASSIVE_3, algorithm="least-connections")), first
    )
    new = second.get(NAME)
    assert new is not None
    assert not address_of(new, A).healthy
    assert address_of(new, A) is a  # unchanged target: the very same Address
    new_b = address_of(new, B)
    assert new_b is not b and new_b.weight == 50 and new_b.connections == 2  # reweighted: state kept
    assert {x.target for x in new.addresses()} == {A, B, D}
    # A request that started before the swap finishes on the old balancer: the new one sees it.
    old.on_release(b)
    assert new_b.connections == 1
    # And a passive report through the old balancer still changes what the new one selects.
    old.set_health(A, True)
    assert address_of(new, A).healthy


def test_health_change_through_an_old_balancer_updates_the_new_ones_threshold() -> None:
    first = Balancers.build(config(upstream([A, B], healthchecks={**PASSIVE_3, "threshold": 100})))
    second = Balancers.build(config(upstream([A, B], healthchecks={**PASSIVE_3, "threshold": 100})), first)
    old, new = first.get(NAME), second.get(NAME)
    assert old is not None and new is not None
    assert new.select() is not None
    for _ in range(3):
        old.report(address_of(old, A), 500)
    assert new.select() is None  # 50% < 100%


def test_turning_health_checks_off_brings_every_target_back() -> None:
    first = Balancers.build(config(upstream([A, B], healthchecks=PASSIVE_3)))
    old = first.get(NAME)
    assert old is not None
    old.set_health(A, False)
    second = Balancers.build(config(upstream([A, B])), first)
    new = second.get(NAME)
    assert new is not None
    assert address_of(new, A).healthy


def test_removed_upstreams_and_targets_are_gone() -> None:
    first = Balancers.build(config(upstream([A, B]), upstream([C], name="gone.internal")))
    second = Balancers.build(config(upstream([A])), first)
    assert second.get("gone.internal") is None
    new = second.get(NAME)
    assert new is not None
    assert [a.target for a in new.addresses()] == [A]


# -- DNS-named targets -------------------------------------------------------------------------------


def test_a_named_target_gets_every_address_of_its_name() -> None:
    balancers = Balancers.build(
        config(upstream([("api.example.test:8080", 10), "10.0.0.9:80"])),
        resolved={"api.example.test": ["10.1.0.2", "10.1.0.1"]},
    )
    balancer = balancers.get(NAME)
    assert balancer is not None
    assert balancers.hostnames() == {"api.example.test"}
    named = [a for a in balancer.addresses() if a.target == "api.example.test:8080"]
    assert sorted(a.host for a in named) == ["10.1.0.1", "10.1.0.2"]
    assert {(a.port, a.weight, a.hostname) for a in named} == {(8080, 10, "api.example.test")}  # per address
    assert picks(balancer, 120) == {"api.example.test:8080": 20, "10.0.0.9:80": 100}


def test_a_name_without_addresses_is_a_dns_error_until_it_resolves() -> None:
    balancers = Balancers.build(config(upstream(["api.example.test:8080"])))
    balancer = balancers.get(NAME)
    assert balancer is not None
    assert balancer.select() is None
    assert balancer.health()[0]["health"] == "DNS_ERROR"
    assert balancers.apply_dns("API.example.test", ["10.1.0.1"], record_type="A")
    address = balancer.select()
    assert address is not None and address.host == "10.1.0.1"
    assert not balancers.apply_dns("api.example.test", ["10.1.0.1"], record_type="A")  # nothing changed
    # The next build reuses the last answer instead of starting empty.
    rebuilt = Balancers.build(config(upstream(["api.example.test:8080"])), balancers).get(NAME)
    assert rebuilt is not None and rebuilt.select() is not None


# -- the Status API shapes -------------------------------------------------------------------------


def test_health_has_kongs_shape() -> None:
    balancer = balancer_for([A, (B, 50)], healthchecks=PASSIVE_3)
    balancer.set_health(B, False)
    by_target = {entry["target"]: entry for entry in balancer.health()}
    entry = by_target[B]
    assert entry["weight"] == 50 and entry["upstream"] == {"id": balancer.id} and "id" in entry
    assert entry["health"] == "UNHEALTHY"
    assert entry["data"] == {
        "host": "10.0.0.2",
        "port": 80,
        "dns": "A",
        "nodeWeight": 50,
        "weight": {"total": 50, "available": 0, "unavailable": 50},
        "addresses": [{"ip": "10.0.0.2", "port": 80, "weight": 50, "health": "UNHEALTHY"}],
    }
    assert by_target[A]["health"] == "HEALTHY"
    summary = balancer.balancer_health()
    assert summary["health"] == "HEALTHY" and summary["id"] == balancer.id
    assert summary["details"]["weight"] == {"total": 150, "available": 100, "unavailable": 50}
    assert len(summary["details"]["hosts"]) == 2


def test_listener_hears_every_availability_change() -> None:
    balancers = Balancers.build(config(upstream([A, B], healthchecks=PASSIVE_3)))
    heard: list[tuple[str, bool, str]] = []
    balancers.set_listener(
        lambda _balancer, address, healthy, source: heard.append((address.target, healthy, source))
    )
    balancer = balancers.get(NAME)
    assert balancer is not None
    for _ in range(3):
        balancer.report(address_of(balancer, A), 500)
    balancer.set_health(A, True)
    assert heard == [(A, False, "passive"), (A, True, "manual")]
