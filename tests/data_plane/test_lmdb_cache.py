"""The data plane's LMDB cache: round trips, encryption, and unreadable caches moved aside."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import lmdb
import msgspec
import pytest
import zstandard

from zonegate.bus.certificates import generate_cluster_certificate
from zonegate.core import config_delta, declarative
from zonegate.core.canonical import config_hash
from zonegate.core.config import Config
from zonegate.core.config_delta import ConfigDelta, diff
from zonegate.data_plane.cache_cipher import CacheCipher
from zonegate.data_plane.lmdb_cache import DELTA_PREFIX, KEY_CONFIG, KEY_META, MAX_DELTAS, ConfigCache
from zonegate.data_plane.worker import merged

CONFIG = declarative.loads('_format_version: "3.0"\nservices: [{name: a, url: "http://10.0.0.1"}]\n')
MAP_SIZE = 16 * 1024 * 1024


def key_file(directory: Path, name: str) -> Path:
    path = directory / f"{name}.key"
    path.write_bytes(generate_cluster_certificate().key_pem())
    return path


def write(path: Path, cipher: CacheCipher | None, config: Config = CONFIG, version: int = 3) -> None:
    cache = ConfigCache(path, MAP_SIZE, cipher=cipher)
    cache.write(config, config_hash(config).config_hash, version)
    cache.close()


def test_plain_round_trip(tmp_path: Path) -> None:
    write(tmp_path / "c", None)
    cache = ConfigCache(tmp_path / "c", MAP_SIZE)
    cached = cache.read()
    assert cached is not None and cached.config == CONFIG and cached.version == 3
    assert cached.config_hash == config_hash(CONFIG).config_hash


def test_encrypted_cache_hides_the_config_and_round_trips(tmp_path: Path) -> None:
    cipher = CacheCipher.from_private_key(key_file(tmp_path, "k"))
    write(tmp_path / "c", cipher)
    raw = (tmp_path / "c" / "data.mdb").read_bytes()
    assert b"10.0.0.1" not in raw and b"config_hash" not in raw
    cache = ConfigCache(tmp_path / "c", MAP_SIZE, cipher=cipher)
    cached = cache.read()
    assert cached is not None and cached.config == CONFIG


def test_cache_sealed_under_another_key_is_moved_aside(tmp_path: Path) -> None:
    write(tmp_path / "c", CacheCipher.from_private_key(key_file(tmp_path, "one")))
    cache = ConfigCache(
        tmp_path / "c", MAP_SIZE, cipher=CacheCipher.from_private_key(key_file(tmp_path, "two"))
    )
    assert cache.read() is None
    assert len(cache.moved_aside) == 1 and cache.moved_aside[0].exists()
    assert cache.read() is None  # a fresh, empty cache: usable at once
    cache.write(CONFIG, config_hash(CONFIG).config_hash, 4)
    assert cache.read() is not None


def test_plain_cache_is_refused_when_encryption_is_on(tmp_path: Path) -> None:
    write(tmp_path / "c", None)
    cache = ConfigCache(
        tmp_path / "c", MAP_SIZE, cipher=CacheCipher.from_private_key(key_file(tmp_path, "k"))
    )
    assert cache.read() is None and cache.moved_aside


@pytest.mark.parametrize("owner", [True, False])
def test_garbage_value_is_moved_aside_by_the_owner_only(tmp_path: Path, owner: bool) -> None:
    write(tmp_path / "c", None)
    env = lmdb.open(str(tmp_path / "c"), map_size=MAP_SIZE)
    with env.begin(write=True) as txn:
        txn.put(KEY_CONFIG, b"not zstd at all")
    env.close()
    cache = ConfigCache(tmp_path / "c", MAP_SIZE, owner=owner)
    assert cache.read() is None
    assert bool(cache.moved_aside) is owner


def test_file_that_is_not_lmdb_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "data.mdb").write_bytes(b"\x00garbage" * 1000)
    cache = ConfigCache(tmp_path / "c", MAP_SIZE)
    assert cache.moved_aside and cache.read() is None


def delta_payload(delta: ConfigDelta) -> bytes:
    return zstandard.ZstdCompressor().compress(msgspec.json.encode(delta.document()))


def service_config(*hosts: str) -> Config:
    services = ", ".join(f'{{name: s{i}, url: "http://{host}"}}' for i, host in enumerate(hosts))
    return declarative.loads(f'_format_version: "3.0"\nservices: [{services}]\n')


@pytest.mark.parametrize("encrypted", [False, True])
def test_deltas_are_replayed_after_the_whole_config_and_reset_by_the_next(
    tmp_path: Path, encrypted: bool
) -> None:
    cipher = CacheCipher.from_private_key(key_file(tmp_path, "k")) if encrypted else None
    steps = [service_config("a"), service_config("a", "b"), service_config("b2", "b"), service_config("c")]
    cache = ConfigCache(tmp_path / "c", MAP_SIZE, cipher=cipher)
    assert not cache.append_delta(delta_payload(diff(Config(), steps[0])), "h0", 1)  # nothing to apply it to
    cache.write(steps[0], "h0", 1)
    for version, (before, after) in enumerate(itertools.pairwise(steps), start=2):
        assert cache.append_delta(delta_payload(diff(before, after)), f"h{version}", version)
        cached = cache.read()  # as a worker would, in another process
        assert cached is not None and cached.config == after
        assert (cached.version, cached.config_hash) == (version, f"h{version}")
    cache.write(steps[0], "h9", 9)  # a whole config drops the deltas before it
    cached = cache.read()
    assert cached is not None and cached.config == steps[0] and cached.version == 9
    cache.close()


def test_past_the_delta_limit_the_caller_writes_the_whole_config(tmp_path: Path) -> None:
    cache = ConfigCache(tmp_path / "c", MAP_SIZE)
    cache.write(CONFIG, "h", 1)
    empty = delta_payload(ConfigDelta())
    assert all(cache.append_delta(empty, "h", 2 + i) for i in range(MAX_DELTAS))
    assert not cache.append_delta(empty, "h", 999)
    cached = cache.read()
    assert cached is not None and cached.version == 1 + MAX_DELTAS and cached.config == CONFIG
    cache.close()


# -- following the cache: generations, read_after, recorded hashes ------------------------------


def cipher_for(tmp_path: Path, encrypted: bool) -> CacheCipher | None:
    return CacheCipher.from_private_key(key_file(tmp_path, "k")) if encrypted else None


def write_whole(cache: ConfigCache, config: Config, version: int) -> None:
    hashed = config_hash(config)
    cache.write(config, hashed.config_hash, version, hashed.hashes)


def append(cache: ConfigCache, before: Config, after: Config, version: int) -> bool:
    hashed = config_hash(after)
    return cache.append_delta(delta_payload(diff(before, after)), hashed.config_hash, version, hashed.hashes)


STEPS = [
    service_config("a"),
    service_config("a", "b"),
    service_config("b2", "b"),
    service_config("c"),
    service_config("c", "d", "e"),
]


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_whole_write_starts_a_generation_that_deltas_keep(tmp_path: Path, encrypted: bool) -> None:
    cache = ConfigCache(tmp_path / "c", MAP_SIZE, cipher=cipher_for(tmp_path, encrypted))
    write_whole(cache, STEPS[0], 1)
    first = cache.read()
    assert first is not None and first.generation and first.deltas == 0
    assert first.known_hash == config_hash(STEPS[0])

    assert append(cache, STEPS[0], STEPS[1], 2)
    after_delta = cache.read()
    assert after_delta is not None and after_delta.generation == first.generation
    assert after_delta.deltas == 1 and after_delta.config == STEPS[1]
    assert after_delta.known_hash == config_hash(STEPS[1])  # the meta describes the config after it

    write_whole(cache, STEPS[1], 3)  # the same config again is still a new generation
    rewritten = cache.read()
    assert rewritten is not None and rewritten.generation not in ("", first.generation)
    assert rewritten.deltas == 0
    cache.close()


@pytest.mark.parametrize("encrypted", [False, True])
def test_read_after_returns_exactly_the_deltas_appended_since(tmp_path: Path, encrypted: bool) -> None:
    # One handle (LMDB opens an environment once per process); the workers' own processes are
    # covered end to end in tests/hybrid/test_delta_workers.py.
    agent = worker = ConfigCache(tmp_path / "c", MAP_SIZE, cipher=cipher_for(tmp_path, encrypted))
    write_whole(agent, STEPS[0], 1)
    start = worker.read()
    assert start is not None
    generation, seen = start.generation, start.deltas

    none_yet = worker.read_after(generation, seen)
    assert none_yet is not None and none_yet.deltas == () and none_yet.count == 0

    # One delta at a time: exactly it comes back, with the hashes of the config it leads to.
    assert append(agent, STEPS[0], STEPS[1], 2)
    update = worker.read_after(generation, seen)
    assert update is not None and update.deltas == (diff(STEPS[0], STEPS[1]),)
    assert (update.count, update.version, update.generation) == (1, 2, generation)
    assert update.known_hash == config_hash(STEPS[1])
    seen = update.count

    # Several appended between two reloads: only those, in order.
    for version, (before, after) in enumerate(itertools.pairwise(STEPS[1:]), start=3):
        assert append(agent, before, after, version)
    update = worker.read_after(generation, seen)
    assert update is not None and update.count == len(STEPS) - 1
    assert update.deltas == tuple(diff(a, b) for a, b in itertools.pairwise(STEPS[1:]))
    assert update.known_hash == config_hash(STEPS[-1])

    # A reader claiming more than there are, or no generation, must read the whole config.
    assert worker.read_after(generation, update.count + 1) is None
    assert worker.read_after("", 0) is None
    assert worker.read_after("not-" + generation, 0) is None
    agent.close()


@pytest.mark.parametrize("encrypted", [False, True])
def test_read_after_says_read_the_whole_config_after_a_rewrite(tmp_path: Path, encrypted: bool) -> None:
    cache = ConfigCache(tmp_path / "c", MAP_SIZE, cipher=cipher_for(tmp_path, encrypted))
    write_whole(cache, STEPS[0], 1)
    start = cache.read()
    assert start is not None
    assert append(cache, STEPS[0], STEPS[1], 2)
    write_whole(cache, STEPS[1], 3)  # e.g. a full snapshot after a missed change
    assert cache.read_after(start.generation, 0) is None
    assert cache.read_after(start.generation, 1) is None
    whole = cache.read()
    assert whole is not None and whole.config == STEPS[1] and whole.deltas == 0
    update = cache.read_after(whole.generation, whole.deltas)
    assert update is not None and update.deltas == ()
    cache.close()


def test_past_max_deltas_the_whole_write_sends_readers_to_read_it(tmp_path: Path) -> None:
    cache = ConfigCache(tmp_path / "c", MAP_SIZE)
    write_whole(cache, CONFIG, 1)
    start = cache.read()
    assert start is not None
    empty = delta_payload(ConfigDelta())
    assert all(cache.append_delta(empty, "h", 2 + i) for i in range(MAX_DELTAS))
    update = cache.read_after(start.generation, MAX_DELTAS - 1)
    assert update is not None and update.count == MAX_DELTAS and update.deltas == (ConfigDelta(),)
    assert update.hashes is None  # appended without hashes: none recorded, not the old ones
    assert not cache.append_delta(empty, "h", 999)
    write_whole(cache, CONFIG, 999)  # what the node does when the cache takes no more deltas
    assert cache.read_after(start.generation, MAX_DELTAS) is None
    whole = cache.read()
    assert whole is not None and whole.generation != start.generation and whole.deltas == 0
    cache.close()


def raw_put(path: Path, key: bytes, value: bytes | None) -> None:
    env = lmdb.open(str(path), map_size=MAP_SIZE)
    with env.begin(write=True) as txn:
        if value is None:
            txn.delete(key)
        else:
            txn.put(key, value)
    env.close()


@pytest.mark.parametrize("damage", [b"not zstd at all", None])
def test_read_after_gives_up_on_a_damaged_delta_without_moving_the_cache(
    tmp_path: Path, damage: bytes | None
) -> None:
    cache = ConfigCache(tmp_path / "c", MAP_SIZE, owner=False)
    write_whole(cache, STEPS[0], 1)
    start = cache.read()
    assert start is not None
    assert append(cache, STEPS[0], STEPS[1], 2)
    cache.close()
    raw_put(tmp_path / "c", DELTA_PREFIX + b"%08d" % 0, damage)
    cache = ConfigCache(tmp_path / "c", MAP_SIZE, owner=False)
    assert cache.read_after(start.generation, 0) is None
    assert not cache.moved_aside
    cache.close()


def test_a_meta_without_generation_or_hashes_still_reads(tmp_path: Path) -> None:
    """A cache written before generations and hashes were recorded."""
    write(tmp_path / "c", None, STEPS[0], 5)
    old_meta = {
        "format": 1,
        "config_hash": config_hash(STEPS[0]).config_hash,
        "version": 5,
        "deltas": 0,
        "written_at": 1.0,
        "zonegate_version": "0.0.1",
    }
    raw_put(tmp_path / "c", KEY_META, json.dumps(old_meta).encode())
    cache = ConfigCache(tmp_path / "c", MAP_SIZE)
    cached = cache.read()
    assert cached is not None and cached.config == STEPS[0] and cached.version == 5
    assert (cached.generation, cached.deltas, cached.hashes, cached.known_hash) == ("", 0, None, None)
    assert cache.read_after("", 0) is None  # no generation to follow: read it whole
    # A delta appended to it gives it a generation, which readers follow from then on.
    assert append(cache, STEPS[0], STEPS[1], 6)
    upgraded = cache.read()
    assert upgraded is not None and upgraded.config == STEPS[1] and upgraded.generation
    update = cache.read_after(upgraded.generation, upgraded.deltas)
    assert update is not None and update.deltas == ()
    cache.close()


def test_a_reader_following_deltas_ends_where_a_whole_read_does(tmp_path: Path) -> None:
    """What a worker does: merge the new deltas, apply them once, and build with the hashes."""
    cache = ConfigCache(tmp_path / "c", MAP_SIZE)
    write_whole(cache, STEPS[0], 1)
    start = cache.read()
    assert start is not None
    served, seen = start.config, start.deltas
    chain = [*STEPS, service_config("c"), service_config()]  # a service back again, then none
    for version, (before, after) in enumerate(itertools.pairwise(chain), start=2):
        assert append(cache, before, after, version)
        if version % 2:  # every other step: two deltas at once
            continue
        update = cache.read_after(start.generation, seen)
        assert update is not None and update.deltas
        served = config_delta.apply(served, merged(update.deltas))
        seen = update.count
        whole = cache.read()
        assert whole is not None and served == whole.config == after
        assert update.known_hash == config_hash(served)
    cache.close()


def test_merged_deltas_do_what_the_deltas_do_in_order() -> None:
    a = {"id": "a", "name": "a", "host": "1"}
    a2 = {"id": "a", "name": "a", "host": "2"}
    b = {"id": "b", "name": "b", "host": "1"}
    c = {"id": "c", "name": "c", "host": "1"}
    base = Config.build({"services": [a, b]})
    chain = [
        ConfigDelta({"services": (c,)}, {"services": ("a",)}),  # c in, a out
        ConfigDelta({"services": (a2,)}, {"services": ("c",)}),  # a back (another object), c out
        ConfigDelta({}, {"services": ("b",)}),
        ConfigDelta({"services": (b,)}, {"services": ("b",)}),  # within a delta the upsert wins
    ]
    expected = base
    for delta in chain:
        expected = config_delta.apply(expected, delta)
    combined = merged(chain)
    assert config_delta.apply(base, combined) == expected
    assert combined.upserts == {"services": (a2, b)} and combined.deletes == {"services": ("c",)}
    assert merged(chain[:1]) is chain[0]
