"""The data plane's config cache in LMDB: the last good config, for workers and for restarts.

The config agent writes the canonical document (zstd-compressed JSON) together with its hash
and version in one write transaction; workers read it in one read transaction, so a reader
sees either the old config or the new one, never half of each. A cache that LMDB cannot open
(corrupt, wrong format) is moved aside and reported, never a crash loop (DESIGN section 3); so
is one that opens but whose config cannot be read, when the reader is the agent (the owner).
With a ``CacheCipher`` every value is sealed with AES-GCM (``cache_cipher``), and a value that was
not sealed under this node's key is unreadable.

A delta snapshot is cached as it came, after the last whole config (``append_delta``): a reader
applies the deltas in order. Past ``MAX_DELTAS`` the caller writes the whole config again, so a
restart never replays more than that.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import lmdb
import msgspec
import structlog
import zstandard

from zonegate import __version__
from zonegate.core import config_delta
from zonegate.core.canonical import canonical_bytes
from zonegate.core.config import Config
from zonegate.core.config_delta import ConfigDelta
from zonegate.data_plane.cache_cipher import CacheCipher, CacheDecryptError
from zonegate.settings import Settings

log = structlog.get_logger(__name__)

KEY_CONFIG: Final = b"config"
KEY_META: Final = b"meta"
DELTA_PREFIX: Final = b"delta:"
FORMAT: Final = 1
MAX_DELTAS: Final = 100


def _delta_key(index: int) -> bytes:
    return DELTA_PREFIX + b"%08d" % index


@dataclass(frozen=True, slots=True)
class CachedConfig:
    config: Config
    config_hash: str
    version: int
    written_at: float
    zonegate_version: str


class ConfigCache:
    def __init__(
        self,
        path: Path,
        map_size: int = 2048 * 1024 * 1024,
        *,
        cipher: CacheCipher | None = None,
        owner: bool = True,
    ) -> None:
        self.path = path
        self.map_size = map_size
        self.cipher = cipher
        self.owner = owner  # the agent owns the cache; workers only read it and never move it
        self.moved_aside: list[Path] = []
        self.env = self._open()

    @classmethod
    def for_settings(cls, settings: Settings, *, owner: bool = True) -> ConfigCache:
        cipher = None
        if settings.data_plane_cache_encryption:
            if settings.cluster_cert_key is None:
                raise ValueError(
                    "data_plane_cache_encryption needs cluster_cert_key (the key it derives from)"
                )
            cipher = CacheCipher.from_private_key(settings.resolve_path(settings.cluster_cert_key))
        path = settings.resolve_path(settings.lmdb_environment_path)
        return cls(path, settings.lmdb_map_size, cipher=cipher, owner=owner)

    def _lmdb_open(self) -> lmdb.Environment:
        return lmdb.open(str(self.path), map_size=self.map_size, max_dbs=0, subdir=True, lock=True)

    def _open(self) -> lmdb.Environment:
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            return self._lmdb_open()
        except lmdb.Error as exc:
            self._move_aside(str(exc))
            return self._lmdb_open()

    def _move_aside(self, reason: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.time_ns()}")
        self.path.rename(aside)
        self.moved_aside.append(aside)
        log.error("lmdb.corrupt_cache_moved_aside", path=str(self.path), moved_to=str(aside), error=reason)
        self.path.mkdir(parents=True, exist_ok=True)

    def write(self, config: Config, config_hash: str, version: int = 0) -> None:
        payload = zstandard.ZstdCompressor(level=3).compress(canonical_bytes(config))
        self.write_compressed(payload, config_hash, version)

    def _meta(self, config_hash: str, version: int, deltas: int) -> bytes:
        meta = json.dumps(
            {
                "format": FORMAT,
                "config_hash": config_hash,
                "version": version,
                "deltas": deltas,
                "written_at": time.time(),
                "zonegate_version": __version__,
            }
        ).encode()
        return self.cipher.seal(meta, KEY_META) if self.cipher is not None else meta

    def write_compressed(self, payload: bytes, config_hash: str, version: int = 0) -> None:
        """``payload``: zstd of the canonical JSON document (a snapshot's payload is exactly that)."""
        if self.cipher is not None:
            payload = self.cipher.seal(payload, KEY_CONFIG)
        with self.env.begin(write=True) as txn:
            self._drop_deltas(txn)
            txn.put(KEY_CONFIG, payload)
            txn.put(KEY_META, self._meta(config_hash, version, 0))

    def append_delta(self, delta: bytes, config_hash: str, version: int) -> bool:
        """Cache a delta snapshot's payload (zstd JSON of a ``ConfigDelta``) after the config and
        deltas already there; False (nothing written) when there is no whole config to apply it
        to or ``MAX_DELTAS`` are there already: write the whole config instead."""
        with self.env.begin(write=True) as txn:
            meta_raw = txn.get(KEY_META)
            if meta_raw is None or txn.get(KEY_CONFIG) is None:
                return False
            try:
                if self.cipher is not None:
                    meta_raw = self.cipher.open(meta_raw, KEY_META)
                count = int(json.loads(meta_raw).get("deltas", 0))
            except (ValueError, CacheDecryptError):
                return False
            if count >= MAX_DELTAS:
                return False
            key = _delta_key(count)
            txn.put(key, self.cipher.seal(delta, key) if self.cipher is not None else delta)
            txn.put(KEY_META, self._meta(config_hash, version, count + 1))
        return True

    def _drop_deltas(self, txn: lmdb.Transaction) -> None:
        cursor = txn.cursor()
        if cursor.set_range(DELTA_PREFIX):
            while bytes(cursor.key()).startswith(DELTA_PREFIX):
                if not cursor.delete():
                    break

    def read(self) -> CachedConfig | None:
        """The cached config, or None when there is none or it cannot be read (reported)."""
        try:
            # One read transaction for the config, its meta and its deltas: a writer replacing
            # them meanwhile is not seen half-way.
            with self.env.begin() as txn:
                payload = txn.get(KEY_CONFIG)
                meta_raw = txn.get(KEY_META)
                if payload is None or meta_raw is None:
                    return None
                if self.cipher is not None:
                    meta_raw = self.cipher.open(meta_raw, KEY_META)
                meta: dict[str, Any] = json.loads(meta_raw)
                deltas = [txn.get(_delta_key(index)) for index in range(int(meta.get("deltas", 0)))]
            if self.cipher is not None:
                payload = self.cipher.open(payload, KEY_CONFIG)
            document = msgspec.json.decode(zstandard.ZstdDecompressor().decompress(payload))
            config = self._with_deltas(Config.build(document), deltas)
        except (ValueError, zstandard.ZstdError, KeyError, TypeError, CacheDecryptError) as exc:
            log.error("lmdb.unreadable_config", path=str(self.path), error=str(exc))
            if self.owner:
                self.env.close()
                self._move_aside(f"unreadable config: {exc}")
                self.env = self._lmdb_open()
            return None
        return CachedConfig(
            config=config,
            config_hash=str(meta.get("config_hash", "")),
            version=int(meta.get("version", 0)),
            written_at=float(meta.get("written_at", 0)),
            zonegate_version=str(meta.get("zonegate_version", "")),
        )

    def _with_deltas(self, config: Config, deltas: list[bytes | None]) -> Config:
        for index, data in enumerate(deltas):
            if data is None:
                raise KeyError(f"delta {index} of {len(deltas)} is missing")
            if self.cipher is not None:
                data = self.cipher.open(data, _delta_key(index))
            raw = zstandard.ZstdDecompressor().decompress(data)
            config = config_delta.apply(config, ConfigDelta.from_document(msgspec.json.decode(raw)))
        return config

    def close(self) -> None:
        self.env.close()
