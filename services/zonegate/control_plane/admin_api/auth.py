"""The admin token: with ``admin_token`` set, every request must carry it.

Kong OSS protects its Admin API only by where it listens (loopback by default); Zonegate adds a
shared token for deployments that must expose it. The header is ``Zonegate-Admin-Token``; a
request without it, or with another value, gets 401 and learns nothing else (the check runs
before routing). The comparison takes the same time however much of the token matches.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from zonegate.control_plane.admin_api.errors import message
from zonegate.control_plane.admin_api.routing import Handler
from zonegate.settings import Listen

HEADER: Final = "Zonegate-Admin-Token"
INVALID: Final = "Invalid or missing admin token"


def token_middleware(token: str) -> Middleware:
    expected = token.encode()

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get(HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            raise message(401, INVALID)
        return await handler(request)

    return check_token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposed_listeners(listeners: Iterable[Listen]) -> list[Listen]:
    """Admin listeners reachable from other hosts (they need a token, or a firewall)."""
    return [listen for listen in listeners if not is_loopback(listen.host)]
