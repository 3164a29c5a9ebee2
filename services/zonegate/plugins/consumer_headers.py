"""What every auth plugin does on success (Kong's ``set_consumer``): authenticate the request and
tell the upstream who the consumer is with Kong's headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zonegate.plugins.api import Exit, PluginContext, SharedIndexes

CONSUMER_ID = "X-Consumer-ID"
CONSUMER_CUSTOM_ID = "X-Consumer-Custom-ID"
CONSUMER_USERNAME = "X-Consumer-Username"
CREDENTIAL_IDENTIFIER = "X-Credential-Identifier"
ANONYMOUS = "X-Anonymous-Consumer"
ALL_HEADERS = (CONSUMER_ID, CONSUMER_CUSTOM_ID, CONSUMER_USERNAME, CREDENTIAL_IDENTIFIER, ANONYMOUS)
_CONSUMER_FIELDS = ((CONSUMER_ID, "id"), (CONSUMER_CUSTOM_ID, "custom_id"), (CONSUMER_USERNAME, "username"))


def set_consumer_headers(
    ctx: PluginContext,
    consumer: Mapping[str, Any] | None,
    credential: Mapping[str, Any] | None,
    identifier: str = "id",
) -> None:
    """``identifier``: the credential field Kong sends as ``X-Credential-Identifier`` (key-auth:
    ``id``, basic-auth: ``username``, jwt: ``key``)."""
    ctx.authenticate(consumer, credential)
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
    # The client's own values of these headers never reach the upstream: all are replaced.
    ctx.replace_headers(ALL_HEADERS, values)


def set_anonymous_consumer(ctx: PluginContext, shared: SharedIndexes, anonymous: str) -> Exit | None:
    """A failed authentication with ``anonymous`` configured: go on as that consumer, or answer
    500 when it does not exist (Kong 3.9's message)."""
    consumer = shared.consumer(anonymous)
    if consumer is None:
        return Exit(500, f"anonymous consumer {anonymous} is configured but doesn't exist")
    set_consumer_headers(ctx, consumer, None)
    return None
