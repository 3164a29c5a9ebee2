"""Canonical bytes and ``config_hash``: what makes two configs the same config.

Kong hashes a config in six parts (routes, services, plugins, upstreams, targets, and the
rest) so a data plane can rebuild only what changed (the router when routes or services
moved, balancers when upstreams or targets did), and reports a 32-hex ``config_hash`` whose
empty value is 32 zeros. We keep that contract. The canonical form is sorted JSON of the flat
config (kinds in a fixed order, entities by id, keys sorted), so key order, entity order and
nesting style never change the bytes, and any field value does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

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


def _encode(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def canonical_document(config: Config) -> dict[str, Any]:
    return {kind: list(config.of(kind)) for kind in KINDS if config.of(kind)}


def canonical_bytes(config: Config) -> bytes:
    return _encode(canonical_document(config))


def _group_bytes(config: Config) -> dict[str, bytes]:
    rest = {kind: list(config.of(kind)) for kind in KINDS if kind not in HASH_GROUPS and config.of(kind)}
    groups = {group: _encode(list(config.of(group))) for group in HASH_GROUPS if group != "rest"}
    groups["rest"] = _encode(rest)
    return groups


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def config_hash(config: Config) -> ConfigHash:
    if config.is_empty():
        return ConfigHash(EMPTY_HASH, dict.fromkeys(HASH_GROUPS, EMPTY_HASH))
    hashes = {group: _digest(data) for group, data in _group_bytes(config).items()}
    combined = "".join(hashes[group] for group in HASH_GROUPS)
    return ConfigHash(_digest(combined.encode()), hashes)
