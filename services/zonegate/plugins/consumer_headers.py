"""What every auth plugin does on success (Kong's ``set_consumer``): authenticate the request and
tell the upstream who the consumer is with Kong's headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zonegate.plugins.api import PluginContext

CONSUMER_ID = "X-Consumer-ID"
CONSUMER_CUSTOM_ID = "X-Consumer-Custom-ID"
CONSUMER_USERNAME = "X-Consumer-Username"
CREDENTIAL_IDENTIFIER = "X-Credential-Identifier"
ANONYMOUS = "X-Anonymous-Consumer"


def set_consumer_headers(
    ctx: PluginContext, consumer: Mapping[str, Any] | None, credential: Mapping[str, Any] | None
) -> None:
    ctx.authenticate(consumer, credential)
    for header, value in (
        (CONSUMER_ID, consumer.get("id") if consumer else None),
        (CONSUMER_CUSTOM_ID, consumer.get("custom_id") if consumer else None),
        (CONSUMER_USERNAME, consumer.get("username") if consumer else None),
        (CREDENTIAL_IDENTIFIER, credential.get("id") if credential else None),
    ):
        if value:
            ctx.set_header(header, str(value))
        else:
            ctx.clear_header(header)
    if credential is not None:
        ctx.clear_header(ANONYMOUS)
    else:
        ctx.set_header(ANONYMOUS, "true")
