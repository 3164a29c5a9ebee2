"""Basic-auth passwords in declarative files: hashed on load as Kong does, so a DB-less node, its
LMDB cache, an export or a snapshot never holds a clear password; digests (exports) are kept."""

from __future__ import annotations

import hashlib
from typing import Any

from zonegate.control_plane.credentials import hash_new_password
from zonegate.core import declarative
from zonegate.core.entities.credentials import is_password_digest, password_digest

CONSUMER_ID = "3f0e8f6a-1d2c-4b5a-9e8f-7a6b5c4d3e2f"


def loaded(password: str, **meta: Any) -> Any:
    document = {
        "_format_version": "3.0",
        **meta,
        "consumers": [
            {
                "id": CONSUMER_ID,
                "username": "ann",
                "basicauth_credentials": [{"username": "ann", "password": password}],
            }
        ],
    }
    return declarative.load(document)


def test_a_clear_password_is_hashed_with_kongs_digest() -> None:
    config = loaded("wonderland")
    (credential,) = config.of("basicauth_credentials")
    assert credential["password"] == hashlib.sha1(("wonderland" + CONSUMER_ID).encode()).hexdigest()
    assert "wonderland" not in str(declarative.to_document(config))
    assert "wonderland" not in str(declarative.to_document(config, nested=True))


def test_a_digest_is_kept_so_export_then_load_is_the_identity() -> None:
    first = loaded("wonderland")
    again = declarative.load(declarative.to_document(first))
    assert again == first
    digest = password_digest(CONSUMER_ID, "wonderland")
    assert loaded(digest).of("basicauth_credentials")[0]["password"] == digest
    assert loaded(digest, _transform=False).of("basicauth_credentials")[0]["password"] == digest


def test_the_admin_api_rule_gives_the_same_digest_and_hashes_nothing_twice() -> None:
    (stored,) = loaded("wonderland").of("basicauth_credentials")
    written = hash_new_password({"consumer": {"id": CONSUMER_ID}, "password": "wonderland"}, None)
    assert written["password"] == stored["password"]
    assert hash_new_password(stored, stored) == stored  # an unchanged digest is not hashed again


def test_digests_of_unicode_passwords_are_of_their_utf8_bytes() -> None:
    assert password_digest(CONSUMER_ID, "pässword") == password_digest(CONSUMER_ID, "pässword".encode())
    assert is_password_digest(password_digest(CONSUMER_ID, "x"))
    assert not is_password_digest("A" * 40) and not is_password_digest(None)
