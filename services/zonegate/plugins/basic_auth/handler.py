"""basic-auth's handler (Kong's ``kong/plugins/basic-auth/access.lua``, 3.6+ behaviour).

``Proxy-Authorization`` is tried first, then ``Authorization``. No header at all: 401
``Unauthorized``; anything else that does not end in a known user with the right password: 401
``Invalid authentication credentials``; both with ``WWW-Authenticate: Basic realm="<realm>"``.
Passwords are compared as Kong's digests (``sha1(password .. consumer_id)``): the config never
holds a clear one. Credentials come from the applied config, indexed by user name once.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Any, Final

from zonegate import __version__
from zonegate.core.entities.credentials import password_digest
from zonegate.plugins import nginx_base64
from zonegate.plugins.api import AccessResult, Exit, Plugin, PluginContext, SharedIndexes
from zonegate.plugins.consumer_headers import set_anonymous_consumer, set_consumer_headers

UNAUTHORIZED: Final = "Unauthorized"
INVALID: Final = "Invalid authentication credentials"

# Kong's patterns, unanchored as ngx.re's are: the scheme anywhere, then user:password.
_BASIC: Final = re.compile(r"\s*[Bb]asic\s*(.+)")
_USER_PASSWORD: Final = re.compile(rb"([^:]+):(.*)")


def parse_basic(value: str) -> tuple[bytes, bytes] | None:
    """The user and password of a ``Basic`` header value, as bytes, or None when it has none."""
    scheme = _BASIC.search(value)
    if scheme is None:
        return None
    decoded = nginx_base64.decode(scheme.group(1))
    if decoded is None:
        return None
    parts = _USER_PASSWORD.search(decoded)
    if parts is None:
        return None
    return parts.group(1), parts.group(2)


def password_matches(credential: Mapping[str, Any], password: bytes) -> bool:
    expected = password_digest(credential["consumer"]["id"], password)
    return hmac.compare_digest(str(credential["password"]), expected)


class BasicAuth(Plugin):
    NAME = "basic-auth"
    PRIORITY = 1100
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        self.shared = shared
        self.credentials = shared.by_field("basicauth_credentials", "username")
        self.anonymous: str | None = self.config.get("anonymous")
        self.hide_credentials: bool = self.config["hide_credentials"]
        self.challenge = {"WWW-Authenticate": f'Basic realm="{self.config["realm"]}"'}

    def access(self, ctx: PluginContext) -> AccessResult:
        if self.anonymous and ctx.credential is not None:
            return None  # an earlier auth plugin already authenticated: logical OR
        failure = self._authenticate(ctx)
        if failure is None:
            return None
        if self.anonymous:
            return set_anonymous_consumer(ctx, self.shared, self.anonymous)
        return failure

    def _given(self, ctx: PluginContext, header: str) -> tuple[bytes, bytes] | None:
        value = ctx.header(header)
        given = parse_basic(value) if value is not None else None
        if self.hide_credentials:
            ctx.clear_header(header)
        return given

    def _credential(self, username: bytes) -> Mapping[str, Any] | None:
        try:
            return self.credentials.get(username.decode())
        except UnicodeDecodeError:
            return None  # no user name of a config is invalid UTF-8

    def _authenticate(self, ctx: PluginContext) -> Exit | None:
        if ctx.header("authorization") is None and ctx.header("proxy-authorization") is None:
            return Exit(401, UNAUTHORIZED, headers=self.challenge)
        credential = None
        password = b""
        given = self._given(ctx, "proxy-authorization")
        if given is not None:
            credential, password = self._credential(given[0]), given[1]
        if credential is None:
            given = self._given(ctx, "authorization")
            if given is None:
                return Exit(401, INVALID, headers=self.challenge)
            credential, password = self._credential(given[0]), given[1]
        if credential is None or not password_matches(credential, password):
            return Exit(401, INVALID, headers=self.challenge)
        consumer = self.shared.consumer(credential["consumer"]["id"])
        if consumer is None:
            return Exit(401, INVALID, headers=self.challenge)
        set_consumer_headers(ctx, consumer, credential, identifier="username")
        return None
