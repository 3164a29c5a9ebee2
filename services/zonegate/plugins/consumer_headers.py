"""What every auth plugin does on success (Kong's ``set_consumer``): authenticate the request and
tell the upstream who the consumer is with Kong's headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from zonegate.plugins.api import Exit, PluginContext, SharedIndexes, encode_header

CONSUMER_ID = "X-Consumer-ID"
CONSUMER_CUSTOM_ID = "X-Consumer-Custom-ID"
CONSUMER_USERNAME = "X-Consumer-Username"
CREDENTIAL_IDENTIFIER = "X-Credential-Identifier"
ANONYMOUS = "X-Anonymous-Consumer"
ALL_HEADERS = (CONSUMER_ID, CONSUMER_CUSTOM_ID, CONSUMER_USERNAME, CREDENTIAL_IDENTIFIER, ANONYMOUS)
_CONSUMER_FIELDS = ((CONSUMER_ID, "id"), (CONSUMER_CUSTOM_ID, "custom_id"), (CONSUMER_USERNAME, "username"))


# What the upstream gets for one consumer and credential: the same on every request.
EncodedHeaders = list[tuple[bytes, bytes]]
_ALL_LOWERED: Final = frozenset(name.lower().encode("latin-1") for name in ALL_HEADERS)


def set_consumer_headers(
    ctx: PluginContext,
    consumer: Mapping[str, Any] | None,
    credential: Mapping[str, Any] | None,
    identifier: str = "id",
    kept: dict[tuple[Any, Any], EncodedHeaders] | None = None,
) -> None:
    """``identifier``: the credential field Kong sends as ``X-Credential-Identifier`` (key-auth:
    ``id``, basic-auth: ``username``, jwt: ``key``). ``kept``: where a plugin instance keeps the
    encoded headers per consumer and credential (instances live as long as the config they came
    with, and ids name the same entities for that long)."""
    ctx.authenticate(consumer, credential)
    key = None
    if kept is not None:
        key = (consumer.get("id") if consumer else None, credential.get("id") if credential else None)
        found = kept.get(key)
        if found is not None:
            # The client's own values of these headers never reach the upstream: all are replaced.
            ctx.replace_encoded_headers(_ALL_LOWERED, found)
            return
    values: list[tuple[str, str]] = []
    if consumer:
        for header, name in _CONSUMER_FIELDS:
            value = consumer.get(name)
            if value:
                values.append((header, str(value)))
    if credential:
        value = credential.get(identifier)
        if value:
            values.append((CREDENTIAL_IDENTIFIER, str(value)))
    if credential is None:
        values.append((ANONYMOUS, "true"))
    encoded = [(encode_header(name), encode_header(value)) for name, value in values]
    if kept is not None and key is not None:
        kept[key] = encoded
    ctx.replace_encoded_headers(_ALL_LOWERED, encoded)


def set_anonymous_consumer(ctx: PluginContext, shared: SharedIndexes, anonymous: str) -> Exit | None:
    """A failed authentication with ``anonymous`` configured: go on as that consumer, or answer
    500 when it does not exist (Kong 3.9's message)."""
    consumer = shared.consumer(anonymous)
    if consumer is None:
        return Exit(500, f"anonymous consumer {anonymous} is configured but doesn't exist")
    set_consumer_headers(ctx, consumer, None)
    return None
