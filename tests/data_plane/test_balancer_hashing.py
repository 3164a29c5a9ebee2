"""Consistent hashing: Kong's hash inputs (``hash_on`` then ``hash_fallback``) and the ring's properties.

Kong: ``kong/runloop/balancer/init.lua`` (``get_value_to_hash``, ``set_cookie``) and
``consistent_hashing.lua`` (the continuum, walked backwards past unavailable addresses).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonegate.data_plane.balancer import Balancers, ConsistentHashingBalancer, NewHashCookie, UpstreamBalancer

from .test_balancer import NAME, balancer_for, config, picks, upstream

A, B, C = "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"


def hashing(hash_on: str, hash_fallback: str = "none", **fields: Any) -> UpstreamBalancer:
    return balancer_for(
        [A, B, C], algorithm="consistent-hashing", hash_on=hash_on, hash_fallback=hash_fallback, **fields
    )


# -- hash inputs ------------------------------------------------------------------------------------


def test_no_hash_input_when_hash_on_is_none_or_the_algorithm_does_not_hash() -> None:
    assert not hashing("none").hashes
    assert hashing("none").hash_key(client_ip="1.2.3.4") is None
    round_robin = balancer_for([A], hash_on="ip")
    assert not round_robin.hashes and round_robin.hash_key(client_ip="1.2.3.4") is None


def test_header_then_ip_fallback() -> None:
    balancer = hashing("header", "ip", hash_on_header="X-Tenant")
    assert balancer.hashes
    assert balancer.hash_key(headers={"x-tenant": "acme"}, client_ip="1.2.3.4") == "acme"
    assert balancer.hash_key(headers={}, client_ip="1.2.3.4") == "1.2.3.4"
    # The proxy may pass a lookup function instead of a mapping (it gets lower-case names).
    assert balancer.hash_key(headers=lambda name: "fn" if name == "x-tenant" else None) == "fn"
    assert balancer.hash_key(headers={"x-tenant": ""}, client_ip="1.2.3.4") == ""  # present but empty


def test_consumer_falls_back_to_credential_then_to_the_fallback() -> None:
    balancer = hashing("consumer", "header", hash_fallback_header="x-user")
    assert balancer.hash_key(consumer_id="c1", credential_id="k1") == "c1"
    assert balancer.hash_key(credential_id="k1", headers={"x-user": "u"}) == "k1"
    assert balancer.hash_key(headers={"x-user": "u"}) == "u"
    assert balancer.hash_key() is None


def test_path_and_uri_capture() -> None:
    assert hashing("path").hash_key(path="/orders/7") == "/orders/7"
    balancer = hashing("uri_capture", "path", hash_on_uri_capture="tenant")
    assert balancer.hash_key(uri_captures={"tenant": "t9"}, path="/p") == "t9"
    assert balancer.hash_key(uri_captures={}, path="/p") == "/p"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a=1&user=bob&b=2", "bob"),
        ("user=b&user=a&user=c", "a,b,c"),  # Kong sorts repeated values and joins them with ","
        ("user", "true"),  # a bare argument is a boolean true in OpenResty
        ("user=", ""),
        ("us%65r=x%20y+z", "x y z"),
        ("other=1", "10.9.9.9"),  # absent: the fallback
        ({"user": ["z", "y"]}, "y,z"),
        ({"user": "m"}, "m"),
    ],
)
def test_query_arg(query: Any, expected: str) -> None:
    balancer = hashing("query_arg", "ip", hash_on_query_arg="user")
    assert balancer.hash_key(query=query, client_ip="10.9.9.9") == expected


def test_cookie_is_read_from_the_cookie_header_or_minted_when_absent() -> None:
    balancer = hashing("cookie", hash_on_cookie="lb", hash_on_cookie_path="/app")
    assert balancer.hash_cookie == ("lb", "/app")
    assert balancer.hash_key(headers={"cookie": "a=1; lb=sticky-1; b=2"}) == "sticky-1"
    assert balancer.hash_key(cookies={"lb": "from-map"}) == "from-map"
    minted = balancer.hash_key(headers={"cookie": "a=1"})
    assert isinstance(minted, NewHashCookie) and len(minted) == 36  # a UUID, as Kong mints
    assert balancer.hash_cookie_header(minted) == f"lb={minted}; Path=/app; SameSite=Lax; HttpOnly"
    again = balancer.hash_key(headers={})
    assert again != minted  # each cookie-less request gets its own
    # The minted key is an ordinary key for select, and the cookie brings the client back there.
    assert balancer.select(minted) is balancer.select(balancer.hash_key(cookies={"lb": str(minted)}))


# -- distribution and stability -----------------------------------------------------------------


def test_keys_spread_by_weight_and_weight_zero_gets_none() -> None:
    balancer = balancer_for(
        [(A, 100), (B, 200), (C, 100), ("10.0.0.4:80", 0)], algorithm="consistent-hashing", hash_on="ip"
    )
    counts = picks(balancer, 8000, [f"client-{i}" for i in range(8000)])
    assert set(counts) == {A, B, C}
    assert counts[B] == pytest.approx(4000, rel=0.08)
    assert counts[A] == pytest.approx(2000, rel=0.12)
    assert counts[C] == pytest.approx(2000, rel=0.12)


def test_without_a_key_it_round_robins_over_the_ring_by_weight() -> None:
    # Kong's docs: hash_on "none" means round-robin (its code would send everything to one target).
    balancer = balancer_for([(A, 100), (B, 300)], algorithm="consistent-hashing")
    counts = picks(balancer, 4000)
    assert counts[B] == pytest.approx(3000, rel=0.08)


def test_same_key_same_target_on_every_build_whatever_the_target_order() -> None:
    first = balancer_for([A, B, C], algorithm="consistent-hashing", hash_on="ip")
    second = balancer_for([C, A, B], algorithm="consistent-hashing", hash_on="ip")
    keys = [f"k{i}" for i in range(200)]
    assert [first.select(k).target for k in keys] == [second.select(k).target for k in keys]  # type: ignore[union-attr]


def test_retries_walk_on_to_another_target() -> None:
    balancer = hashing("ip")
    first = balancer.select("key")
    assert first is not None
    second = balancer.select("key", frozenset({first}))
    assert second is not None and second is not first
    assert balancer.select("key", frozenset({first})) is second  # deterministic


def test_ring_uses_at_least_kongs_minimum_size() -> None:
    small = balancer_for([A, B], algorithm="consistent-hashing", slots=10)
    assert isinstance(small, ConsistentHashingBalancer)
    assert small.ring_size == 1000
    assert balancer_for([A], algorithm="consistent-hashing", slots=20000).ring_size == 20000  # type: ignore[attr-defined]


# -- properties ------------------------------------------------------------------------------------

_targets = st.lists(
    st.tuples(st.integers(1, 250), st.integers(1, 65535), st.sampled_from([1, 5, 50, 100, 100, 100, 999])),
    min_size=2,
    max_size=7,
    unique_by=lambda t: (t[0], t[1]),
)
_keys = st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=40)


def _ring(targets: list[tuple[int, int, int]]) -> UpstreamBalancer:
    rendered = [(f"10.0.{a}.1:{port}", weight) for a, port, weight in targets]
    found = Balancers.build(
        config(upstream(rendered, algorithm="consistent-hashing", hash_on="ip", slots=1000))
    ).get(NAME)
    assert found is not None
    return found


def _mapping(balancer: UpstreamBalancer, keys: list[str]) -> dict[str, str]:
    return {key: balancer.select(key).target for key in keys}  # type: ignore[union-attr]


@settings(max_examples=40, deadline=None)
@given(targets=_targets, keys=_keys, data=st.data())
def test_removing_a_target_remaps_only_its_keys(
    targets: list[tuple[int, int, int]], keys: list[str], data: st.DataObject
) -> None:
    before = _mapping(_ring(targets), keys)
    removed = data.draw(st.integers(0, len(targets) - 1))
    gone = f"10.0.{targets[removed][0]}.1:{targets[removed][1]}"
    after = _mapping(_ring(targets[:removed] + targets[removed + 1 :]), keys)
    for key in keys:
        if before[key] != gone:
            assert after[key] == before[key]
        else:
            assert after[key] != gone


@settings(max_examples=40, deadline=None)
@given(targets=_targets, keys=_keys)
def test_adding_a_target_only_takes_keys_for_itself_and_rebuilds_are_stable(
    targets: list[tuple[int, int, int]], keys: list[str]
) -> None:
    smaller = _mapping(_ring(targets[:-1]), keys)
    larger_balancer = _ring(targets)
    larger = _mapping(larger_balancer, keys)
    added = f"10.0.{targets[-1][0]}.1:{targets[-1][1]}"
    assert all(larger[key] in (smaller[key], added) for key in keys)
    assert _mapping(_ring(list(reversed(targets))), keys) == larger  # same set, same ring
    assert _mapping(larger_balancer, keys) == larger  # same key, same target, every time


def test_key_to_target_mapping_is_the_same_in_another_process() -> None:
    # crc32 and SHAKE-128, not Python's per-process salted hash(): every data plane must send a key to
    # the same target. Another interpreter with another hash seed must agree.
    keys = [f"u{i}" for i in range(50)]
    here = [hashing("ip").select(key).target for key in keys]  # type: ignore[union-attr]
    script = (
        "import json, sys\n"
        "from tests.data_plane.test_balancer_hashing import hashing\n"
        "keys = json.loads(sys.argv[1])\n"
        "print(json.dumps([hashing('ip').select(k).target for k in keys]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(keys)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert json.loads(result.stdout) == here
