"""The data plane's LMDB cache: round trips, encryption, and unreadable caches moved aside."""

from __future__ import annotations

import itertools
from pathlib import Path

import lmdb
import msgspec
import pytest
import zstandard

from zonegate.bus.certificates import generate_cluster_certificate
from zonegate.core import declarative
from zonegate.core.canonical import config_hash
from zonegate.core.config import Config
from zonegate.core.config_delta import ConfigDelta, diff
from zonegate.data_plane.cache_cipher import CacheCipher
from zonegate.data_plane.lmdb_cache import KEY_CONFIG, MAX_DELTAS, ConfigCache

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
