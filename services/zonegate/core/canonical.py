"""Canonical bytes and ``config_hash``: what makes two configs the same config.

Kong hashes a config in six parts (routes, services, plugins, upstreams, targets, and the
rest) so a data plane can rebuild only what changed (the router when routes or services
moved, balancers when upstreams or targets did), and reports a 32-hex ``config_hash`` whose
empty value is 32 zeros. We keep that contract. The canonical form is sorted JSON of the flat
config (kinds in a fixed order, entities by id, keys sorted), so key order, entity order and
nesting style never change the bytes, and any field value does.

The encoder is msgspec's with sorted keys: the same bytes as ``json.dumps(sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`` except that float exponents carry no "+"
(``1e16``, not ``1e+16``), 2.5x faster to write; each kind is encoded once and both the
payload and the six sub-hashes are assembled from those pieces.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from zonegate.core.config import Config
from zonegate.core.entities import KINDS

HASH_GROUPS: Final = ("routes", "services", "plugins", "upstreams", "targets", "rest")
EMPTY_HASH: Final = "0" * 32


@dataclass(frozen=True, slots=True)
class ConfigHash:
    config_hash: str
    hashes: dict[str, str]

    def changed_groups(self, previous: ConfigHash | None) -> frozenset[str]:
        """The groups whose sub-hash differs: what a data plane must rebuild."""
        if previous is None:
            return frozenset(HASH_GROUPS)
        return frozenset(g for g in HASH_GROUPS if self.hashes[g] != previous.hashes.get(g))


_ENCODER: Final = msgspec.json.Encoder(order="sorted")


def _encode(value: Any) -> bytes:
    return _ENCODER.encode(value)


def canonical_document(config: Config) -> dict[str, Any]:
    return {kind: list(config.of(kind)) for kind in KINDS if config.of(kind)}


def _kind_bytes(config: Config) -> dict[str, bytes]:
    """Each non-empty kind's entity list, encoded once."""
    return {kind: _encode(list(config.of(kind))) for kind in KINDS if config.of(kind)}


def _object(parts: dict[str, bytes]) -> bytes:
    """The JSON object of already encoded values, keys sorted as the encoder sorts them."""
    return b"{" + b",".join(_encode(key) + b":" + parts[key] for key in sorted(parts)) + b"}"


def canonical_bytes(config: Config) -> bytes:
    return _object(_kind_bytes(config))


def _group_bytes(kinds: dict[str, bytes]) -> dict[str, bytes]:
    groups = {group: kinds.get(group, b"[]") for group in HASH_GROUPS if group != "rest"}
    groups["rest"] = _object({kind: data for kind, data in kinds.items() if kind not in HASH_GROUPS})
    return groups


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _hash_of(config: Config, kinds: dict[str, bytes]) -> ConfigHash:
    if config.is_empty():
        return ConfigHash(EMPTY_HASH, dict.fromkeys(HASH_GROUPS, EMPTY_HASH))
    hashes = {group: _digest(data) for group, data in _group_bytes(kinds).items()}
    combined = "".join(hashes[group] for group in HASH_GROUPS)
    return ConfigHash(_digest(combined.encode()), hashes)


def config_hash(config: Config) -> ConfigHash:
    return _hash_of(config, _kind_bytes(config))


def encode_config(config: Config) -> tuple[bytes, ConfigHash]:
    """``canonical_bytes`` and ``config_hash`` of ``config``, each kind encoded only once."""
    kinds = _kind_bytes(config)
    return _object(kinds), _hash_of(config, kinds)
