"""cors's handler (Kong's ``kong/plugins/cors/handler.lua``): the same headers, in the same cases.

- A preflight (OPTIONS with ``Origin`` and ``Access-Control-Request-Method``) is answered here with
  200 and the allow-headers, unless ``preflight_continue`` sends it upstream untouched.
- Any other response (the upstream's, a plugin's exit, a proxy error) gets the allow-origin,
  credentials and expose headers in the response phase.
- ``origins`` empty or just ``*``: ``Access-Control-Allow-Origin: *``. One plain origin: that
  origin, whatever the request's. Otherwise the request's origin is normalized (default port
  dropped) and compared: exactly with plain entries, by an anchored regex with the others (on the
  host alone when the entry has no ``:``); a ``*`` among several allows every origin. No match
  clears the header. ``Vary: Origin`` goes with every answer that depends on the origin.
- ``credentials`` with ``*`` echoes the request's origin instead, since browsers refuse ``*``
  with credentials.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from zonegate import __version__
from zonegate.core import pcre
from zonegate.plugins.api import AccessResult, Exit, Plugin, PluginContext, SharedIndexes

ALLOW_ORIGIN: Final = "Access-Control-Allow-Origin"
ALLOW_CREDENTIALS: Final = "Access-Control-Allow-Credentials"
ALLOW_HEADERS: Final = "Access-Control-Allow-Headers"
ALLOW_METHODS: Final = "Access-Control-Allow-Methods"
ALLOW_PRIVATE_NETWORK: Final = "Access-Control-Allow-Private-Network"
EXPOSE_HEADERS: Final = "Access-Control-Expose-Headers"
MAX_AGE: Final = "Access-Control-Max-Age"
DEFAULT_METHODS: Final = "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT"
SKIP: Final = "cors:preflight"  # per-request flag: the preflight's headers are already set

_PLAIN: Final = re.compile(r"^[A-Za-z0-9.:/-]+$")
_SCHEME: Final = re.compile(r"^([A-Za-z0-9][A-Za-z0-9+.-]*):")
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}


def normalize_origin(origin: str) -> tuple[str, str]:
    """(domain, host) of an origin as Kong computes them (luasocket's URL parser): the scheme
    and host as written, the port unless it is the scheme's default. Without ``//`` there is no
    host and both are the text itself."""
    rest = origin.split("#", 1)[0]
    scheme_match = _SCHEME.match(rest)
    scheme = scheme_match.group(1) if scheme_match else None
    if scheme_match:
        rest = rest[scheme_match.end() :]
    if not rest.startswith("//"):
        return origin, origin
    authority = rest[2:].split("/", 1)[0]
    authority = authority.split("@", 1)[1] if "@" in authority else authority
    port: str | None = None
    port_match = re.search(r":([^:\]]*)$", authority)
    if port_match:
        port = port_match.group(1)
        authority = authority[: port_match.start()]
    if not authority:
        return origin, origin
    host = authority[1:-1] if authority.startswith("[") and authority.endswith("]") else authority
    if scheme is not None and port == _DEFAULT_PORTS.get(scheme):
        port = None
    domain = (f"{scheme}://" if scheme else "") + authority + (f":{port}" if port is not None else "")
    return domain, host


@dataclass(frozen=True, slots=True)
class AllowedOrigin:
    """One ``origins`` entry: an exact origin, or a regex anchored at both ends."""

    domain: str | None
    regex: re.Pattern[str] | None
    by_host: bool  # an entry without ":" is compared with the request's host alone

    @classmethod
    def parse(cls, entry: str) -> AllowedOrigin:
        by_host = ":" not in entry
        if _PLAIN.match(entry):
            return cls(normalize_origin(entry)[0], None, by_host)
        # Kong 0.x did not anchor regexes; Kong anchors them now, keeping explicit anchors working.
        pattern = entry if entry.endswith("$") else entry + "$"
        pattern = pattern.removeprefix("^")
        return cls(None, re.compile(pcre.to_python(pattern), re.ASCII), by_host)

    def matches(self, domain: str, host: str) -> bool:
        if self.regex is not None:
            return self.regex.match(host if self.by_host else domain) is not None
        return domain == self.domain


def _number(value: float) -> str:
    """Lua's ``tostring`` of a number: no ``.0`` on whole numbers."""
    return str(int(value)) if float(value).is_integer() else str(value)


class Cors(Plugin):
    NAME = "cors"
    PRIORITY = 2000
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        config = self.config
        origins: list[str] = config.get("origins") or []
        self.allow_any = not origins or origins == ["*"]
        self.single = origins[0] if len(origins) == 1 and _PLAIN.match(origins[0]) else None
        self.star_among = "*" in origins
        self.allowed = tuple(AllowedOrigin.parse(entry) for entry in origins if entry != "*")
        self.headers = ",".join(config.get("headers") or ()) or None
        self.exposed = ",".join(config.get("exposed_headers") or ()) or None
        methods = config.get("methods")
        self.methods = ",".join(methods) if methods is not None else DEFAULT_METHODS
        max_age = config.get("max_age")
        self.max_age = _number(max_age) if max_age is not None else None
        self.credentials: bool = config["credentials"]
        self.private_network: bool = config["private_network"]
        self.preflight_continue: bool = config["preflight_continue"]
        self.origin_absent: bool = config["allow_origin_absent"]

    def access(self, ctx: PluginContext) -> AccessResult:
        origin = ctx.header("Origin") or None
        if ctx.method != "OPTIONS" or origin is None or ctx.header("Access-Control-Request-Method") is None:
            return None
        ctx.shared[SKIP] = True  # preflight: answered here, or the upstream's business
        if self.preflight_continue:
            return None
        allow_any = self._allow_origin(ctx, origin, in_response=False)
        self._allow_credentials(ctx, origin, allow_any, in_response=False)
        if self.headers is not None:
            ctx.set_response_header(ALLOW_HEADERS, self.headers)
        else:
            requested = ctx.header("Access-Control-Request-Headers")
            if requested is not None:
                ctx.set_response_header(ALLOW_HEADERS, requested)
            else:
                ctx.clear_response_header(ALLOW_HEADERS)
        ctx.set_response_header(ALLOW_METHODS, self.methods)
        if self.max_age is not None:
            ctx.set_response_header(MAX_AGE, self.max_age)
        if self.private_network and ctx.header("Access-Control-Request-Private-Network") == "true":
            ctx.set_response_header(ALLOW_PRIVATE_NETWORK, "true")
        return Exit(200)

    def response(self, ctx: PluginContext) -> None:
        if ctx.shared.get(SKIP):
            return
        origin = ctx.header("Origin") or None
        if origin is None and not self.origin_absent:
            return
        allow_any = self._allow_origin(ctx, origin, in_response=True)
        self._allow_credentials(ctx, origin, allow_any, in_response=True)
        if self.exposed is not None:
            ctx.set_response_header(EXPOSE_HEADERS, self.exposed)

    def _allow_origin(self, ctx: PluginContext, origin: str | None, *, in_response: bool) -> bool:
        """Set Access-Control-Allow-Origin; True when it allows every origin."""
        if self.allow_any:
            ctx.set_response_header(ALLOW_ORIGIN, "*")
            return True
        _vary(ctx, in_response)  # the answer depends on the origin (caches key on it)
        if self.single is not None:
            ctx.set_response_header(ALLOW_ORIGIN, self.single)
            return False
        if origin is not None:
            if self.star_among:
                ctx.set_response_header(ALLOW_ORIGIN, "*")
                return True
            domain, host = normalize_origin(origin)
            if any(allowed.matches(domain, host) for allowed in self.allowed):
                ctx.set_response_header(ALLOW_ORIGIN, domain)
                return False
        ctx.clear_response_header(ALLOW_ORIGIN)
        return False

    def _allow_credentials(
        self, ctx: PluginContext, origin: str | None, allow_any: bool, *, in_response: bool
    ) -> None:
        if not self.credentials:
            return
        if not allow_any:
            ctx.set_response_header(ALLOW_CREDENTIALS, "true")
        elif origin is not None:
            # Browsers refuse credentials with "*": allow this origin by name instead.
            _vary(ctx, in_response)
            ctx.set_response_header(ALLOW_ORIGIN, origin)
            ctx.set_response_header(ALLOW_CREDENTIALS, "true")


def _vary(ctx: PluginContext, in_response: bool) -> None:
    # On a response, Origin joins whatever Vary the upstream sent; on a preflight it is the only one.
    if in_response:
        ctx.add_response_header("Vary", "Origin")
    else:
        ctx.set_response_header("Vary", "Origin")
