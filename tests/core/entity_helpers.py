"""Shared helpers for the entity schema tests: validate, capture a violation, build Kong's body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import pytest

from zonegate.core.entities import BY_NAME
from zonegate.core.errors import SchemaViolation

# Fixed ids for foreign keys; any valid UUID will do.
SERVICE_ID: Final = "5a0f6a3c-6c1e-4b4e-9a51-6d2c2d1e7f10"
CONSUMER_ID: Final = "0d7d4a27-2c55-4a8f-8a43-0c7f1c3b9e21"
UPSTREAM_ID: Final = "b3e1c1f2-9d1a-4f43-a0b3-0f6c2a7e5d32"
CERTIFICATE_ID: Final = "8c2e9b4d-1f3a-4c5e-b7d9-2a4c6e8f0b43"

CONDITIONAL: Final = "failed conditional validation given value of field '{}'"


def validate(kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``data`` as an entity of ``kind``; fail the test with the error body if it is refused."""
    try:
        return BY_NAME[kind].validate(data)
    except SchemaViolation as exc:  # pragma: no cover - only on a failing test
        pytest.fail(f"{kind} unexpectedly refused: {exc.body()}")


def violation(kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``data`` expecting a refusal; return Kong's error body."""
    with pytest.raises(SchemaViolation) as info:
        BY_NAME[kind].validate(data)
    body = info.value.body()
    # The exception's text is the body's message, as Kong's err_t tostring() is.
    assert str(info.value) == body["message"]
    return body


def kong_body(message: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Kong's schema violation body (code 2), written out in full by each test."""
    return {"code": 2, "name": "schema violation", "message": message, "fields": dict(fields)}


def conditional(field: str) -> str:
    return CONDITIONAL.format(field)
