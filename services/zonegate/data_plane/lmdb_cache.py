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

The meta names the state it describes: the config hash and its six group sub-hashes (so a
reader can hand them to ``build_runtime`` instead of hashing the config again) and a
``generation``, a token every whole write replaces and ``append_delta`` keeps. A worker that
remembers (generation, deltas seen) asks ``read_after`` for only the deltas appended since; a
different generation, or anything it cannot vouch for, means: read the whole config.
"""

from __future__ import annotations

import json
import os
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
from zonegate.core.canonical import HASH_GROUPS, ConfigHash, canonical_bytes
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


def _new_generation() -> str:
    # Random rather than a counter: a whole write need not read the old meta, and a cache moved
    # aside and started afresh can never repeat the generation a worker remembers.
    return os.urandom(8).hex()


def _group_hashes(meta: dict[str, Any]) -> dict[str, str] | None:
    """The six sub-hashes the meta records, or None when it has none (an older cache) or they
    are not all there: a reader then hashes the config itself."""
    found = meta.get("hashes")
    if not isinstance(found, dict) or not all(isinstance(found.get(g), str) for g in HASH_GROUPS):
        return None
    return {group: str(found[group]) for group in HASH_GROUPS}


def _known_hash(config_hash: str, hashes: dict[str, str] | None) -> ConfigHash | None:
    return ConfigHash(config_hash, dict(hashes)) if hashes is not None and config_hash else None


@dataclass(frozen=True, slots=True)
class CachedConfig:
    config: Config
    config_hash: str
    version: int
    written_at: float
    zonegate_version: str
    generation: str = ""  # "" for a cache written before generations were recorded
    deltas: int = 0  # how many deltas were applied on top of the whole config
    hashes: dict[str, str] | None = None  # the six group sub-hashes, when recorded

    @property
    def known_hash(self) -> ConfigHash | None:
        """What ``build_runtime`` may take instead of hashing the config again."""
        return _known_hash(self.config_hash, self.hashes)


@dataclass(frozen=True, slots=True)
class CachedUpdate:
    """The deltas appended after the ones a reader has seen, within the same generation."""

    deltas: tuple[ConfigDelta, ...]
    config_hash: str  # of the config once every delta is applied
    version: int
    generation: str
    count: int  # deltas in the cache now: what the reader has seen after applying these
    hashes: dict[str, str] | None = None

    @property
    def known_hash(self) -> ConfigHash | None:
        return _known_hash(self.config_hash, self.hashes)


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

    def write(
        self, config: Config, config_hash: str, version: int = 0, hashes: dict[str, str] | None = None
    ) -> None:
        payload = zstandard.ZstdCompressor(level=3).compress(canonical_bytes(config))
        self.write_compressed(payload, config_hash, version, hashes)

    def _meta(
        self, config_hash: str, version: int, deltas: int, generation: str, hashes: dict[str, str] | None
    ) -> bytes:
        """``hashes``: the group sub-hashes of the config the meta describes (after its deltas);
        None records none, never the previous ones, which would describe another config."""
        meta = json.dumps(
            {
                "format": FORMAT,
                "config_hash": config_hash,
                "version": version,
                "deltas": deltas,
                "generation": generation,
                "hashes": hashes,
                "written_at": time.time(),
                "zonegate_version": __version__,
            }
        ).encode()
        return self.cipher.seal(meta, KEY_META) if self.cipher is not None else meta

    def _open_meta(self, meta_raw: bytes) -> dict[str, Any]:
        """The meta as written; ValueError or CacheDecryptError when it is not readable."""
        if self.cipher is not None:
            meta_raw = self.cipher.open(meta_raw, KEY_META)
        meta = json.loads(meta_raw)
        if not isinstance(meta, dict):
            raise ValueError("the cache meta is not an object")
        return meta

    def write_compressed(
        self, payload: bytes, config_hash: str, version: int = 0, hashes: dict[str, str] | None = None
    ) -> None:
        """``payload``: zstd of the canonical JSON document (a snapshot's payload is exactly that).
        A new generation: readers that followed the deltas before it read the whole config."""
        if self.cipher is not None:
            payload = self.cipher.seal(payload, KEY_CONFIG)
        with self.env.begin(write=True) as txn:
            self._drop_deltas(txn)
            txn.put(KEY_CONFIG, payload)
            txn.put(KEY_META, self._meta(config_hash, version, 0, _new_generation(), hashes))

    def append_delta(
        self, delta: bytes, config_hash: str, version: int, hashes: dict[str, str] | None = None
    ) -> bool:
        """Cache a delta snapshot's payload (zstd JSON of a ``ConfigDelta``) after the config and
        deltas already there; False (nothing written) when there is no whole config to apply it
        to or ``MAX_DELTAS`` are there already: write the whole config instead. ``hashes``: the
        sub-hashes of the config once the delta is applied."""
        with self.env.begin(write=True) as txn:
            meta_raw = txn.get(KEY_META)
            if meta_raw is None or txn.get(KEY_CONFIG) is None:
                return False
            try:
                meta = self._open_meta(meta_raw)
                count = int(meta.get("deltas", 0))
            except (ValueError, TypeError, CacheDecryptError):
                return False
            if count >= MAX_DELTAS:
                return False
            # A cache from before generations has none: give it one now, so readers that read
            # it whole (generation "") can follow the deltas from the next reload on.
            generation = str(meta.get("generation") or _new_generation())
            key = _delta_key(count)
            txn.put(key, self.cipher.seal(delta, key) if self.cipher is not None else delta)
            txn.put(KEY_META, self._meta(config_hash, version, count + 1, generation, hashes))
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
                meta = self._open_meta(meta_raw)
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
            generation=str(meta.get("generation") or ""),
            deltas=len(deltas),
            hashes=_group_hashes(meta),
        )

    def read_after(self, generation: str, seen: int) -> CachedUpdate | None:
        """The deltas appended after the first ``seen`` of ``generation``, decoded and in order
        (none when nothing was appended), or None: read the whole config (``read``), because it
        was rewritten since, or the cache holds fewer deltas than that, or something is missing
        or unreadable. Never moves the cache aside: ``read`` decides that."""
        if not generation:
            return None  # a reader that does not know its generation cannot follow anything
        try:
            with self.env.begin() as txn:  # the meta and its deltas as one writer left them
                meta_raw = txn.get(KEY_META)
                if meta_raw is None:
                    return None
                meta = self._open_meta(meta_raw)
                count = int(meta.get("deltas", 0))
                if str(meta.get("generation") or "") != generation or not 0 <= seen <= count:
                    return None
                found = [(index, txn.get(_delta_key(index))) for index in range(seen, count)]
            deltas = tuple(self._decoded_delta(index, data) for index, data in found)
        except (ValueError, zstandard.ZstdError, KeyError, TypeError, CacheDecryptError) as exc:
            log.warning("lmdb.deltas_unreadable", path=str(self.path), error=str(exc))
            return None
        return CachedUpdate(
            deltas=deltas,
            config_hash=str(meta.get("config_hash", "")),
            version=int(meta.get("version", 0)),
            generation=generation,
            count=count,
            hashes=_group_hashes(meta),
        )

    def _decoded_delta(self, index: int, data: bytes | None) -> ConfigDelta:
        if data is None:
            raise KeyError(f"delta {index} is missing")
        if self.cipher is not None:
            data = self.cipher.open(data, _delta_key(index))  # sealed under its own key name
        raw = zstandard.ZstdDecompressor().decompress(data)
        return ConfigDelta.from_document(msgspec.json.decode(raw))

    def _with_deltas(self, config: Config, deltas: list[bytes | None]) -> Config:
        for index, data in enumerate(deltas):
            if data is None:
                raise KeyError(f"delta {index} of {len(deltas)} is missing")
            config = config_delta.apply(config, self._decoded_delta(index, data))
        return config

    def close(self) -> None:
        self.env.close()
