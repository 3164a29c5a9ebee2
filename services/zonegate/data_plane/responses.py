"""Responses the proxy writes itself: Kong's error bodies and status lines, as ready bytes.

Kong answers its own errors with a JSON ``{"message": ..., "request_id": ...}`` body and the
status codes its users alert on (404 no route, 502 bad upstream response, 503 no healthy
target, 504 upstream timeout, 426 for https-only routes). The texts are Kong's so that
dashboards and client code keep working.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Final

from zonegate import __version__

SERVER_TOKEN: Final = f"zonegate/{__version__}".encode()
VIA_TOKEN: Final = b"1.1 " + SERVER_TOKEN

NO_ROUTE: Final = "no Route matched with those values"
BAD_UPSTREAM_RESPONSE: Final = "An invalid response was received from the upstream server"
NO_HEALTHY_TARGET: Final = "failure to get a peer from the ring-balancer"
NAME_RESOLUTION_FAILED: Final = "name resolution failed"
UPSTREAM_TIMEOUT: Final = "The upstream server is timing out"
USE_HTTPS: Final = "Please use HTTPS protocol"
BAD_REQUEST: Final = "Bad request"
HEADERS_TOO_LARGE: Final = "Request header or cookie too large"
BODY_TOO_LARGE: Final = "Request size limit exceeded"
REQUEST_TIMEOUT: Final = "Request timeout"
UNEXPECTED: Final = "An unexpected error occurred"
NOT_IMPLEMENTED: Final = "Not implemented"

# Kong's nginx maps oversized request headers to its own 494.
STATUS_HEADERS_TOO_LARGE: Final = 494

_REASONS: Final[dict[int, bytes]] = {s.value: s.phrase.encode() for s in HTTPStatus}
_REASONS[494] = b"Request Header Or Cookie Too Large"


def reason(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


_STATUS_LINES: Final[dict[int, bytes]] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, text) for code, text in _REASONS.items()
}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d %s\r\n" % (status, reason(status))


JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"


def error_body(message: str, request_id: str) -> bytes:
    """Kong's JSON error body."""
    return json.dumps({"message": message, "request_id": request_id}).encode()


def error_response(
    status: int,
    message: str,
    request_id: str,
    *,
    keep_alive: bool,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    head_only: bool = False,
) -> bytes:
    """A complete response with Kong's JSON error body, in one buffer for one write."""
    return raw_response(
        status,
        error_body(message, request_id),
        JSON_CONTENT_TYPE,
        request_id,
        keep_alive=keep_alive,
        extra_headers=extra_headers,
        head_only=head_only,
    )


def raw_response(
    status: int,
    body: bytes,
    content_type: str | None,
    request_id: str,
    *,
    keep_alive: bool,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    head_only: bool = False,
) -> bytes:
    """A complete response a plugin chose (status, body, content type), in one buffer."""
    lines = [status_line(status)]
    if content_type:
        lines.append(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n")
    lines += [
        b"Content-Length: %d\r\n" % len(body),
        b"Server: " + SERVER_TOKEN + b"\r\n",
        b"X-Zonegate-Request-Id: " + request_id.encode() + b"\r\n",
    ]
    for name, value in extra_headers or ():
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    if not head_only:
        lines.append(body)
    return b"".join(lines)
