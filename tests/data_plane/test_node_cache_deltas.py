"""The node's LMDB cache and deltas when the proxy refuses a config it was handed.

``apply_config`` writes the cache first, then swaps the proxy. If the swap fails, the cache is
ahead of what is served; a delta from what is served must then not be appended to it (a restart
would replay the refused change too): the next write is the whole config.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import msgspec
import zstandard

from zonegate.core import config_delta, declarative
from zonegate.core.canonical import ConfigHash, config_hash
from zonegate.core.config import Config
from zonegate.core.config_delta import Change, ConfigDelta
from zonegate.data_plane.lmdb_cache import ConfigCache
from zonegate.data_plane.node import DbLessNode
from zonegate.settings import load_settings


class RefusingHost:
    """Stands for the proxy: refuses the configs it is told to, serves the others."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.served: list[str] = []

    async def apply(
        self, config: Config, hashes: ConfigHash | None = None, change: Change | None = None
    ) -> None:
        digest = hashes.config_hash if hashes is not None else config_hash(config).config_hash
        if digest in self.refuse:
            raise RuntimeError("refused")
        self.served.append(digest)


def delta_payload(delta: ConfigDelta) -> bytes:
    return zstandard.ZstdCompressor().compress(msgspec.json.encode(delta.document()))


def test_a_delta_is_not_appended_to_a_cache_holding_a_refused_config(tmp_path: Path) -> None:
    node = DbLessNode(load_settings({"ZONEGATE_PREFIX": str(tmp_path)}, None))
    node.cache = ConfigCache(tmp_path / "cache")
    base = declarative.loads('_format_version: "3.0"\nservices: [{name: a, url: "http://a:80"}]\n')
    (service,) = base.of("services")
    refused_delta = ConfigDelta({"services": ({**service, "retries": 1},)}, {})
    refused = config_delta.apply(base, refused_delta)
    good_delta = ConfigDelta({"services": ({**service, "retries": 2},)}, {})
    good = config_delta.apply(base, good_delta)
    host = RefusingHost({config_hash(refused).config_hash})
    node.host = host  # type: ignore[assignment]

    async def run() -> None:
        await node.apply_config(base, version=1, hashes=config_hash(base))
        with contextlib.suppress(RuntimeError):  # the proxy keeps serving base; the cache has v2
            await node.apply_config(
                refused,
                version=2,
                hashes=config_hash(refused),
                delta=delta_payload(refused_delta),
                change=Change(base, refused_delta),
            )
        await node.apply_config(
            good,
            version=3,
            hashes=config_hash(good),
            delta=delta_payload(good_delta),
            change=Change(base, good_delta),
        )

    asyncio.run(run())
    cached = node.cache.read()
    assert cached is not None
    assert cached.deltas == 0  # written whole, not base + refused + good
    assert cached.config == good and cached.config_hash == config_hash(good).config_hash
    assert host.served == [config_hash(base).config_hash, config_hash(good).config_hash]
    node.cache.close()
