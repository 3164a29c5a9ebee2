"""Authenticated encryption of the data plane's LMDB cache (``data_plane_cache_encryption = on``).

Kong keeps DP cache encryption for its Enterprise edition; here it is one setting. The key is
derived with HKDF-SHA256 from the node's cluster private key, so whoever can read the cache file
but not the key learns nothing and cannot forge a cache the node would accept: AES-256-GCM
authenticates every byte, so a copied cache only boots on a node holding the same cluster key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC: Final = b"ZGE1"  # format marker and version of an encrypted value
_NONCE: Final = 12
_SALT: Final = b"zonegate data plane cache"
_INFO: Final = b"lmdb config cache v1"


class CacheDecryptError(Exception):
    """A value that is not ours, was altered, or was sealed under another key."""


class CacheCipher:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def from_private_key(cls, path: Path) -> CacheCipher:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"cluster_cert_key {path} cannot key the cache encryption: {exc}") from None
        secret = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(secret)
        return cls(derived)

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return MAGIC + nonce + self._aead.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        if not sealed.startswith(MAGIC) or len(sealed) < len(MAGIC) + _NONCE + 16:
            raise CacheDecryptError("the cache is not encrypted (or not by Zonegate)")
        nonce = sealed[len(MAGIC) : len(MAGIC) + _NONCE]
        try:
            return self._aead.decrypt(nonce, sealed[len(MAGIC) + _NONCE :], context)
        except InvalidTag:
            raise CacheDecryptError("the cache does not decrypt with this node's cluster key") from None
