"""Credentials that the auth plugins own: key-auth keys, basic-auth users, JWT secrets, ACL groups.

They hang off a consumer and go when it goes (Kong's ``on_delete = "cascade"``).

Invariant: a basic-auth password is kept only as Kong's digest, ``sha1(password .. consumer_id)``
in lower-case hex (``kong/plugins/basic-auth/crypto.lua``); data planes compare digests. Whatever
loads credentials from outside (declarative files, the Admin API) hashes clear passwords with
``password_digest``; a value that already looks like a digest (``is_password_digest``) is kept.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t
from zonegate.core import x509
from zonegate.core.errors import ENTITY_KEY
from zonegate.core.schema import Entity, EntitySchema, custom

_consumer = f.foreign("consumers", required=True, on_delete="cascade", description="The owning consumer.")

KEYAUTH: Final = EntitySchema(
    name="keyauth_credentials",
    endpoint_key="key",
    description="An API key of a consumer (key-auth).",
    fields=(
        ("id", t.uuid),
        ("created_at", t.auto_timestamp_s),
        ("consumer", _consumer),
        ("key", f.string(unique=True, auto=True, description="The API key.")),
        ("ttl", f.integer(f.between(0, 100000000), description="Seconds until the key expires.")),
        ("tags", t.tags),
    ),
)

_DIGEST_RE: Final = re.compile(r"^[0-9a-f]{40}$")


def password_digest(consumer_id: str, password: str | bytes) -> str:
    """Kong's basic-auth digest of ``password`` for that consumer (bytes: as the client sent them)."""
    raw = password if isinstance(password, bytes) else password.encode()
    return hashlib.sha1(raw + consumer_id.encode()).hexdigest()


def is_password_digest(value: object) -> bool:
    return isinstance(value, str) and _DIGEST_RE.match(value) is not None


BASICAUTH: Final = EntitySchema(
    name="basicauth_credentials",
    endpoint_key="username",
    description="A user name and password of a consumer (basic-auth).",
    fields=(
        ("id", t.uuid),
        ("created_at", t.auto_timestamp_s),
        ("consumer", _consumer),
        ("username", f.string(required=True, unique=True, description="The user name.")),
        ("password", f.string(required=True, description="The password.")),
        ("tags", t.tags),
    ),
)

JWT_ALGORITHMS: Final = (
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
    "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA",
)  # fmt: skip
ASYMMETRIC: Final = tuple(a for a in JWT_ALGORITHMS if not a.startswith("HS"))


def check_public_key(entity: Entity) -> dict[str, Any]:
    """Kong's conditional: an asymmetric algorithm needs a valid PEM public key; HMAC ignores it."""
    if entity.get("algorithm") not in ASYMMETRIC:
        return {}
    key = entity.get("rsa_public_key")
    if key is None:
        message = "required field missing"
    elif not isinstance(key, str) or x509.public_key_error(key) is not None:
        message = "invalid key"
    else:
        return {}
    return {
        ENTITY_KEY: ["failed conditional validation given value of field 'algorithm'"],
        "rsa_public_key": message,
    }


JWT: Final = EntitySchema(
    name="jwt_secrets",
    endpoint_key="key",
    description="A JWT issuer key and secret of a consumer (jwt).",
    fields=(
        ("id", t.uuid),
        ("created_at", t.auto_timestamp_s),
        ("consumer", _consumer),
        ("key", f.string(unique=True, auto=True, description="The iss (or key_claim_name) value.")),
        ("secret", f.string(auto=True, description="HMAC secret.")),
        (
            "rsa_public_key",
            f.string(description="PEM public key, checked for asymmetric algorithms only."),
        ),
        ("algorithm", f.string(f.one_of(*JWT_ALGORITHMS), default="HS256", description="Signing algorithm.")),
        ("tags", t.tags),
    ),
    checks=(custom(("algorithm", "rsa_public_key"), check_public_key, runs_with_invalid=("algorithm",)),),
)

ACLS: Final = EntitySchema(
    name="acls",
    cache_key=("consumer", "group"),
    description="A group a consumer belongs to (acl).",
    fields=(
        ("id", t.uuid),
        ("created_at", t.auto_timestamp_s),
        ("consumer", _consumer),
        ("group", f.string(required=True, description="The group name.")),
        ("tags", t.tags),
    ),
)
