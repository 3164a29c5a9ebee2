"""Secrets the control plane generates or hashes before a credential is stored.

Invariant: a basic-auth password is stored, exported and published only as Kong's digest,
``sha1(password .. consumer_id)`` in lower-case hex (``kong/plugins/basic-auth/crypto.lua``), so
data planes and files never carry the clear password.

Two paths reach the store and they tell clear passwords from digests differently:

* The Admin API hashes every password it is given, except one equal to the digest already
  stored for that credential (Kong's rule: re-sending what a GET returned must not re-hash it).
* Whole configs (``POST /config``, ``zonegate config db-import``) come from files, usually from
  an export, which holds digests. There, a password that is already a digest (40 lower-case hex
  characters) is kept and anything else is hashed, so export -> import -> export is the
  identity. The cost: a clear password that happens to be 40 lower-case hex characters is taken
  for a digest; the Admin API, which never guesses, is the way to set such a password.
"""

from __future__ import annotations

import secrets
from typing import Final

from zonegate.core.entities.credentials import password_digest
from zonegate.core.schema import Entity

BASICAUTH: Final = "basicauth_credentials"


def random_secret() -> str:
    """A generated key or secret: 24 random bytes, URL-safe base64 (32 characters, as Kong's)."""
    return secrets.token_urlsafe(24)


def hash_new_password(entity: Entity, existing: Entity | None) -> Entity:
    """An Admin API write: hash the password unless it is the digest ``existing`` already holds."""
    password = entity.get("password")
    consumer = entity.get("consumer")
    if not isinstance(password, str) or not isinstance(consumer, dict):
        return entity
    if existing is not None and existing.get("password") == password:
        return entity
    return {**entity, "password": password_digest(consumer["id"], password)}
