"""The data plane's config cache in LMDB: the last good config, for workers and for restarts.

The config agent writes the canonical document (zstd-compressed JSON) together with its hash
and version in one write transaction; workers read it in one read transaction, so a reader
sees either the old config or the new one, never half of each. A cache that LMDB cannot open
(corrupt, wrong format) is moved aside and reported, never a crash loop (DESIGN section 3).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import lmdb
import structlog
import zstandard

from zonegate import __version__
from zonegate.core.canonical import canonical_document
from zonegate.core.config import Config

log = structlog.get_logger(__name__)

KEY_CONFIG: Final = b"config"
KEY_META: Final = b"meta"
FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class CachedConfig:
    config: Config
    config_hash: str
    version: int
    written_at: float
    zonegate_version: str


class ConfigCache:
    def __init__(self, path: Path, map_size: int = 2048 * 1024 * 1024) -> None:
        self.path = path
        self.map_size = map_size
        self.env = self._open()

    def _open(self) -> lmdb.Environment:
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            return lmdb.open(str(self.path), map_size=self.map_size, max_dbs=0, subdir=True, lock=True)
        except lmdb.Error as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            self.path.rename(aside)
            log.error(
                "lmdb.corrupt_cache_moved_aside", path=str(self.path), moved_to=str(aside), error=str(exc)
            )
            self.path.mkdir(parents=True, exist_ok=True)
            return lmdb.open(str(self.path), map_size=self.map_size, max_dbs=0, subdir=True, lock=True)

    def write(self, config: Config, config_hash: str, version: int = 0) -> None:
        payload = zstandard.ZstdCompressor(level=3).compress(
            json.dumps(canonical_document(config), separators=(",", ":")).encode()
        )
        meta = {
            "format": FORMAT,
            "config_hash": config_hash,
            "version": version,
            "written_at": time.time(),
            "zonegate_version": __version__,
        }
        with self.env.begin(write=True) as txn:
            txn.put(KEY_CONFIG, payload)
            txn.put(KEY_META, json.dumps(meta).encode())

    def read(self) -> CachedConfig | None:
        """The cached config, or None when there is none or it cannot be read (reported)."""
        with self.env.begin() as txn:
            payload = txn.get(KEY_CONFIG)
            meta_raw = txn.get(KEY_META)
        if payload is None or meta_raw is None:
            return None
        try:
            meta: dict[str, Any] = json.loads(meta_raw)
            document = json.loads(zstandard.ZstdDecompressor().decompress(payload))
            config = Config.build(document)
        except (ValueError, zstandard.ZstdError, KeyError, TypeError) as exc:
            log.error("lmdb.unreadable_config", path=str(self.path), error=str(exc))
            return None
        return CachedConfig(
            config=config,
            config_hash=str(meta.get("config_hash", "")),
            version=int(meta.get("version", 0)),
            written_at=float(meta.get("written_at", 0)),
            zonegate_version=str(meta.get("zonegate_version", "")),
        )

    def close(self) -> None:
        self.env.close()
