"""Every Admin API error, mapped to Kong's status and body in this one place.

Kong's Admin API answers DAO errors with the error table itself and a status per code
(``kong/api/endpoints.lua``, ``ERRORS_HTTP_CODES``): 400 for codes 1, 2, 3, 4, 7, 9, 10, 11, 13
and 19, 404 for 6, 405 for 12 (a write on a node without a database), 409 for 5; and plain
``{"message": ...}`` bodies for routing failures (404 ``Not found``, 405 ``Method not allowed``).
A 500 means a bug here: bad input never causes one. Where Kong answers 500 for a database that
cannot be reached, we answer 503 with the reason, so a client can tell "retry later" from "this
is broken".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from zonegate.control_plane.errors import (
    DatabaseError,
    SchemaNotReady,
    StoreError,
    StoreUnavailable,
    lua_table,
)
from zonegate.core.errors import DeclarativeConfigError, SchemaViolation

INVALID_PRIMARY_KEY: Final = 1
INVALID_SIZE: Final = 9
INVALID_UNIQUE: Final = 10
INVALID_OPTIONS: Final = 11
FOREIGN_KEYS_UNRESOLVED: Final = 13

# Status by Kong error code (``ERRORS_HTTP_CODES``); anything else is a bug (500).
_STATUS_BY_CODE: Final[dict[int, int]] = {
    1: 400,
    2: 400,
    3: 400,
    4: 400,
    5: 409,
    6: 404,
    7: 400,
    9: 400,
    10: 400,
    11: 400,
    12: 405,
    13: 400,
    14: 400,
    19: 400,
}

NOT_FOUND_BODY: Final = {"message": "Not found"}
METHOD_NOT_ALLOWED_BODY: Final = {"message": "Method not allowed"}
UNEXPECTED_BODY: Final = {"message": "An unexpected error occurred"}


def dumps(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=dumps)


class ApiError(Exception):
    """An answer that ends the request: a status and a JSON body (or none, for 304)."""

    def __init__(self, status: int, body: Mapping[str, Any] | None, headers: Mapping[str, str] | None = None):
        super().__init__(body.get("message") if body else str(status))
        self.status = status
        self.body = dict(body) if body is not None else None
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        if self.body is None:
            return web.Response(status=self.status, headers=self.headers)
        return json_response(self.body, self.status, self.headers)


def message(status: int, text: str) -> ApiError:
    return ApiError(status, {"message": text})


def not_found() -> ApiError:
    return ApiError(404, NOT_FOUND_BODY)


def method_not_allowed() -> ApiError:
    return ApiError(405, METHOD_NOT_ALLOWED_BODY)


def schema_violation(fields: dict[str, Any]) -> ApiError:
    return ApiError(400, SchemaViolation(fields).body())


def _kong_error(code: int, name: str, text: str, **extra: Any) -> ApiError:
    return ApiError(_STATUS_BY_CODE[code], {"code": code, "name": name, "message": text, **extra})


def invalid_size(text: str) -> ApiError:
    return _kong_error(INVALID_SIZE, "invalid size", text)


def invalid_options(options: dict[str, str]) -> ApiError:
    parts = [f"{name}: {options[name]}" for name in sorted(options)]
    text = (
        f"invalid option ({parts[0]})"
        if len(parts) == 1
        else f"{len(parts)} option violations ({'; '.join(parts)})"
    )
    return _kong_error(INVALID_OPTIONS, "invalid options", text, options=options)


def invalid_unique(name: str, text: str) -> ApiError:
    return _kong_error(INVALID_UNIQUE, f"invalid unique {name}", text)


def invalid_primary_key(errors: dict[str, str]) -> ApiError:
    """Kong validates the primary key before a select: a non-UUID where no name may stand."""
    return _kong_error(
        INVALID_PRIMARY_KEY,
        "invalid primary key",
        f"invalid primary key: '{lua_table(errors)}'",
        fields=errors,
    )


def foreign_keys_unresolved(errors: dict[str, dict[str, tuple[str, Any, str]]]) -> ApiError:
    """``{"service": {"name": ("name", "x", "services")}}``: references by name that match nothing."""
    fields: dict[str, dict[str, str]] = {}
    parts: list[str] = []
    for field_name in sorted(errors):
        fields[field_name] = {}
        for sub in sorted(errors[field_name]):
            key, value, parent = errors[field_name][sub]
            text = (
                f"the foreign key cannot be resolved with '{lua_table({key: value})}' "
                f"for an existing '{parent}' entity"
            )
            fields[field_name][sub] = text
            parts.append(f"{field_name}.{sub}: {text}")
    summary = (
        f"foreign key unresolved ({parts[0]})"
        if len(parts) == 1
        else (f"{len(parts)} foreign keys unresolved ({'; '.join(parts)})")
    )
    return _kong_error(FOREIGN_KEYS_UNRESOLVED, "foreign keys unresolved", summary, fields=fields)


def from_exception(exc: BaseException) -> ApiError | None:
    """The answer for a domain error, or None when ``exc`` is not one (a bug: the caller logs a 500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, SchemaViolation | DeclarativeConfigError):
        return ApiError(400, exc.body())
    if isinstance(exc, StoreUnavailable | SchemaNotReady):
        return message(503, str(exc))
    if isinstance(exc, DatabaseError):
        return None
    if isinstance(exc, StoreError):
        status = _STATUS_BY_CODE.get(exc.code)
        if status is None:
            return None
        return ApiError(status, exc.body())
    return None
