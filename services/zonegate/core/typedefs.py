"""Shared field types, after Kong's ``kong/db/schema/typedefs.lua``: declared once, used by every entity."""

from __future__ import annotations

import re
from typing import Any, Final

from zonegate.core import fields as f
from zonegate.core import pcre, uri
from zonegate.core.fields import Field
from zonegate.core.net import HostError, is_ip, is_ip_or_cidr, parse_host_port
from zonegate.core.x509 import certificate_error, private_key_error

# Kong OSS's protocols (ws and wss are Enterprise-only; WebSocket upgrades ride on http routes).
PROTOCOLS: Final = ("grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough", "udp")

MAX_TIMEOUT: Final = 2**31 - 2


# -- custom validators -----------------------------------------------------------------------


def _host(value: str) -> str | None:
    try:
        parsed = parse_host_port(value)
    except HostError as exc:
        return "must not have a port" if exc.bad_port else f"invalid value: {value}"
    if parsed.port is not None:
        return "must not have a port"
    return None


def _host_with_optional_port(value: str) -> str | None:
    try:
        parse_host_port(value)
    except HostError as exc:
        return str(exc)
    return None


def _sni(value: str) -> str | None:
    try:
        parsed = parse_host_port(value)
    except HostError as exc:
        return "must not have a port" if exc.bad_port else f"invalid value: {value}"
    if parsed.type != "name":
        return "must not be an IP"
    if parsed.port is not None:
        return "must not have a port"
    return None


def _wildcard_host(value: str) -> str | None:
    index = value.find("*")
    if index != -1:
        if index not in (0, len(value) - 1):
            return "wildcard must be leftmost or rightmost character"
        if value.count("*") > 1:
            return "only one wildcard must be specified"
        value = value.replace("*", "wildcard")
    return _sni(value)


_PATH_CHARS_RE: Final = re.compile(r"^/[A-Za-z0-9._~/%:@!$&'()*+,;=-]*$")
_BAD_ESCAPE_RE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _path(value: str) -> str | None:
    if not _PATH_CHARS_RE.match(value):
        return f"invalid path: '{value}' (characters outside of the reserved list of RFC 3986 found)"
    bad = _BAD_ESCAPE_RE.search(value)
    if bad:
        return f"invalid url-encoded value: '{value[bad.start() : bad.start() + 3]}'"
    return None


def _router_path(value: str) -> str | None:
    # Kong checks a prefix path only for broken escapes and normal form (not for RFC 3986
    # characters, which the router matches after normalising), and a regex only as a regex.
    if value.startswith("~"):
        return pcre.regex_error(value[1:])
    bad = _BAD_ESCAPE_RE.search(value)
    if bad:
        return f"invalid url-encoded value: '{value[bad.start() : bad.start() + 3]}'"
    normalized = uri.normalize(value)
    if normalized != value:
        return f"non-normalized path, consider use '{normalized}' instead"
    return None


def _hosts_element(value: str) -> str | None:
    if value.count("*") > 1:
        return "invalid wildcard: must have at most one wildcard"
    if "*" in value and not (value.startswith("*.") or value.endswith(".*")):
        return "invalid wildcard: must be placed at leftmost or rightmost label"
    error = _host_with_optional_port(value.replace("*", "abc"))
    if error is not None:
        return f"invalid hostname: {value}" if error != "invalid port number" else error
    return None


_HEADER_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-]+$")


def _header_name(value: str) -> str | None:
    if _HEADER_NAME_RE.match(value):
        return None
    return f"bad header name '{value}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"


def _utf8_name(value: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9._~\-\u0080-\U0010ffff]+", value):
        return None
    return f"invalid value '{value}': the only accepted ascii characters are alphanumerics or ., -, _, and ~"


def _tag(value: str) -> str | None:
    if (
        value
        and re.fullmatch(r"[ !-+\-.0-~\u0080-\U0010ffff]+", value)
        and "," not in value
        and "/" not in value
    ):
        return None
    return f"invalid tag '{value}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences"


def _ip(value: str) -> str | None:
    return None if is_ip(value) else f"not an ip address: {value}"


def _ip_or_cidr(value: str) -> str | None:
    return None if is_ip_or_cidr(value) else f"invalid ip or cidr range: '{value}'"


def _http_method(value: str) -> str | None:
    return None if re.fullmatch(r"[A-Z]+", value) else f"invalid value: {value}"


def _url(value: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
    except ValueError as exc:
        return f"could not parse url. {exc}"
    if not parts.scheme:
        return "missing scheme in url"
    if not parts.hostname:
        return "missing host in url"
    return None


# -- typedefs -----------------------------------------------------------------------------

uuid: Final = f.string(f.is_uuid, auto=True, description="A UUID.")
auto_timestamp_s: Final = f.integer(auto=True, description="Unix epoch seconds, set by Zonegate.")
name: Final = f.string(
    f.matches(r"^[A-Za-z0-9._~-]+$", "invalid value"),
    unique=True,
    description="A unique name.",
)
utf8_name: Final = f.string(_utf8_name, unique=True, description="A unique name (UTF-8 allowed).")
protocol: Final = f.string(f.one_of(*PROTOCOLS), description="A protocol.")
host: Final = f.string(_host, description="A host name or IP address, without port.")
host_with_optional_port: Final = f.string(
    _host_with_optional_port, description="A host with an optional port."
)
wildcard_host: Final = f.string(_wildcard_host, description="A host name with at most one wildcard label.")
sni: Final = f.string(_sni, description="A TLS server name.")
ip: Final = f.string(_ip, description="An IP address.")
ip_or_cidr: Final = f.string(_ip_or_cidr, description="An IP address or a CIDR range.")
port: Final = f.integer(f.between(0, 65535), description="A port number.")
path: Final = f.string(
    f.starts_with("/"),
    f.matches_none("//", "must not have empty segments"),
    _path,
    description="A URL path.",
)
url: Final = f.string(_url, description="A URL.")
header_name: Final = f.string(_header_name, description="An HTTP header name.")
timeout: Final = f.integer(f.between(0, MAX_TIMEOUT), description="A timeout in milliseconds.")
nonzero_timeout: Final = f.integer(f.between(1, MAX_TIMEOUT), description="A timeout in milliseconds.")
tag: Final = f.string(_tag, required=True, description="A tag.")
tags: Final = f.set_of(tag, description="Tags, to group and filter entities.")
certificate: Final = f.string(certificate_error, description="A PEM certificate.")
key: Final = f.string(private_key_error, description="A PEM private key.")
http_method: Final = f.string(_http_method, description="An HTTP method in upper case.")
methods: Final = f.set_of(http_method, description="HTTP methods that match this route.")
hosts: Final = f.array(f.string(_hosts_element), description="Host names that match this route.")
router_path: Final = f.string(
    f.matches_none("//", "must not have empty segments"),
    f.matches(r"^~?/", "should start with: / (fixed path) or ~/ (regex path)"),
    _router_path,
)
router_paths: Final = f.array(router_path, description="Paths (prefixes, or regexes starting with ~).")
headers: Final = f.map_of(
    header_name(
        validators=(
            _header_name,
            f.matches_none(
                r"^[Hh][Oo][Ss][Tt]$",
                "cannot contain 'host' header, which must be specified in the 'hosts' attribute",
            ),
        )
    ),
    f.array(f.string(), len_min=1),
    description="Header names mapped to values that match this route; ~* prefixes a regex.",
)
snis: Final = f.set_of(wildcard_host, description="TLS server names that match this route.")


def _ip_or_port(record: dict[str, Any]) -> dict[str, Any]:
    if record.get("ip") is None and record.get("port") is None:
        return {"@entity": ["at least one of these fields must be non-empty: 'ip', 'port'"]}
    return {}


endpoint: Final = f.record(("ip", ip_or_cidr), ("port", port), record_checks=(_ip_or_port,))
sources: Final = f.set_of(endpoint, description="Source IPs and ports (stream routes).")
destinations: Final = f.set_of(endpoint, description="Destination IPs and ports (stream routes).")


def set_of_protocols(options: tuple[str, ...], default: list[str]) -> Field:
    return f.set_of(f.string(f.one_of(*options)), required=True, default=default, len_min=1)
