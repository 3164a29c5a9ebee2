"""jwt's handler (Kong's ``kong/plugins/jwt/handler.lua``, 3.7+ behaviour).

Tokens are gathered from the query (``uri_param_names``), cookies (``cookie_names``) and
``Bearer`` headers (``header_names``); more than one distinct token is refused. The credential
is the ``jwt_secrets`` entry whose ``key`` is the token's ``key_claim_name`` claim (payload
first, then header); its algorithm must be the token's. Refusals are 401 with Kong's bodies
(``{"message": ...}``, or the failed claims as ``{"exp": "token expired"}``) and a
``WWW-Authenticate: Bearer`` challenge (``error="invalid_token"`` once a token was given).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, Final

from zonegate import __version__
from zonegate.plugins import nginx_base64
from zonegate.plugins.api import AccessResult, Exit, Plugin, PluginContext, SharedIndexes
from zonegate.plugins.consumer_headers import set_anonymous_consumer, set_consumer_headers
from zonegate.plugins.jwt import token as jwt_token

_BEARER: Final = re.compile(r"\s*[Bb]earer\s+(.+)")
_COOKIE_SEPARATORS: Final = re.compile(r"[;,]")


def cookie_value(cookie_headers: list[str], name: str) -> str | None:
    """nginx's ``$cookie_<name>``: the first cookie of that name (case-insensitive)."""
    wanted = name.lower()
    for header in cookie_headers:
        for pair in _COOKIE_SEPARATORS.split(header):
            key, sep, value = pair.strip().partition("=")
            if sep and key.lower() == wanted:
                return value
    return None


class Jwt(Plugin):
    NAME = "jwt"
    PRIORITY = 1450
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        config = self.config
        self.shared = shared
        self.secrets = shared.by_field("jwt_secrets", "key")
        self.anonymous: str | None = config.get("anonymous")
        self.run_on_preflight: bool = config["run_on_preflight"]
        self.uri_param_names: list[str] = config["uri_param_names"] or []
        self.cookie_names: list[str] = config["cookie_names"] or []
        # kong.request.get_headers() folds case and reads "_" as "-".
        self.header_names = [n.lower().replace("_", "-") for n in config["header_names"] or []]
        self.key_claim: str = config["key_claim_name"]
        self.secret_is_base64: bool = config["secret_is_base64"]
        self.claims_to_verify: list[str] = config.get("claims_to_verify") or []
        self.maximum_expiration: float = config.get("maximum_expiration") or 0
        realm = config.get("realm")
        challenge = f'Bearer realm="{realm}"' if realm else "Bearer"
        self.challenge = {"WWW-Authenticate": challenge}
        self.invalid_token = {"WWW-Authenticate": f'{challenge} error="invalid_token"'}

    def access(self, ctx: PluginContext) -> AccessResult:
        if not self.run_on_preflight and ctx.method == "OPTIONS":
            return None
        if not self.anonymous:
            return self._authenticate(ctx)  # logical AND with other auth plugins
        if ctx.credential is not None:
            return None  # an earlier auth plugin already authenticated: logical OR
        if self._authenticate(ctx) is None:
            return None
        return set_anonymous_consumer(ctx, self.shared, self.anonymous)

    def _tokens(self, ctx: PluginContext) -> set[str]:
        found: set[str] = set()
        for name in self.uri_param_names:
            found.update(value for value in ctx.query.get(name, ()) if value)
        if self.cookie_names:
            cookies = ctx.header_values("cookie")
            for name in self.cookie_names:
                value = cookie_value(cookies, name)
                if value:
                    found.add(value)
        for name in self.header_names:
            value = ctx.header(name)
            match = _BEARER.search(value) if value is not None else None
            if match is not None:
                found.add(match.group(1))
        return found

    def _refuse(self, message: str) -> Exit:
        return Exit(401, json={"message": message}, headers=self.invalid_token)

    def _authenticate(self, ctx: PluginContext) -> Exit | None:
        tokens = self._tokens(ctx)
        if not tokens:
            return Exit(401, json={"message": "Unauthorized"}, headers=self.challenge)
        if len(tokens) > 1:
            return self._refuse("Multiple tokens provided")
        (raw,) = tokens
        try:
            token = jwt_token.decode(raw)
        except jwt_token.TokenError as exc:
            return self._refuse(f"Bad token; {exc}")
        claim = self.key_claim
        key = token.claims.get(claim)
        if key is None or key is False:
            key = token.header.get(claim)
        if key is None or key is False:
            return self._refuse(f"No mandatory '{claim}' in claims")
        if key == "":
            return self._refuse(f"Invalid '{claim}' in claims")
        secret = self.secrets.get(key) if isinstance(key, str) else None
        if secret is None:
            return self._refuse(f"No credentials found for given '{claim}'")
        refused = self._verify(token, secret)
        if refused is not None:
            return refused
        consumer = self.shared.consumer(secret["consumer"]["id"])
        if consumer is None:
            return Exit(401, json={"message": f"Could not find consumer for '{claim}={key}'"})
        set_consumer_headers(ctx, consumer, secret, identifier="key")
        ctx.shared["authenticated_jwt_token"] = raw
        return None

    def _verify(self, token: jwt_token.Token, secret: Mapping[str, Any]) -> Exit | None:
        algorithm = secret.get("algorithm") or "HS256"
        if token.alg != algorithm:
            return self._refuse("Invalid algorithm")
        value = secret.get("secret") if algorithm.startswith("HS") else secret.get("rsa_public_key")
        key: bytes | None = value.encode() if isinstance(value, str) else None
        if key is not None and self.secret_is_base64:
            key = nginx_base64.decode_url(value) if isinstance(value, str) else None
        if not key:
            return self._refuse("Invalid key/secret")
        if not jwt_token.verify_signature(token, key):
            return self._refuse("Invalid signature")
        now = int(time.time())
        errors = jwt_token.claim_errors(token.claims, self.claims_to_verify, now)
        if (
            not errors
            and self.maximum_expiration > 0
            and jwt_token.exceeds_maximum_expiration(token.claims, self.maximum_expiration, now)
        ):
            errors = {"exp": "exceeds maximum allowed expiration"}
        if errors:
            return Exit(401, json=errors, headers=self.invalid_token)
        return None
