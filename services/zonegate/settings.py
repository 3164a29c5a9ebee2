"""The frozen settings object: one per process, read once, passed in, never read from globals later.

Invariants owned here:

* Every setting is declared once, in ``SETTING_SPECS`` (name, caster, default text, description, Kong name),
  and mirrored by one typed field of ``Settings``; a test keeps the two in step.
* Sources, highest first: environment ``ZONEGATE_<NAME>``, then the conf file (Kong's ``kong.conf`` format),
  then the default. Only the winning value is cast; unknown names are errors in both sources.
* Every failure is a ``SettingsError`` whose message is one line naming the setting, where the value came
  from and the value itself (``<hidden>`` for secrets), so the CLI can print ``str(error)`` and exit.
* Nothing here touches the filesystem except ``load_settings`` reading the conf file it was given;
  certificate and declarative paths are kept as ``Path`` and checked by the component that opens them.
"""

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Generic, Literal, NamedTuple, TypeVar
from urllib.parse import quote, urlencode, urlsplit

__all__ = [
    "CONF_ENV",
    "ENV_PREFIX",
    "HEADER_TOKENS",
    "SETTING_SPECS",
    "SPECS_BY_NAME",
    "TEST_ENV_PREFIX",
    "Caster",
    "ClusterMtls",
    "ConfEntry",
    "Database",
    "IPNetwork",
    "Listen",
    "LogFormat",
    "LogLevel",
    "Role",
    "SettingSpec",
    "Settings",
    "SettingsError",
    "check_settings",
    "conf_path_from_env",
    "env_name",
    "load_settings",
    "parse_conf",
]

ENV_PREFIX: Final = "ZONEGATE_"
CONF_ENV: Final = "ZONEGATE_CONF"
"""Environment variable naming the conf file (read by ``conf_path_from_env``, not a setting)."""
TEST_ENV_PREFIX: Final = "ZONEGATE_TEST_"
"""Environment variables with this prefix belong to the test suite and are ignored here."""

HIDDEN: Final = "<hidden>"

Role = Literal["traditional", "control_plane", "data_plane"]
Database = Literal["postgres", "off"]
LogLevel = Literal["debug", "info", "notice", "warn", "error", "crit"]
LogFormat = Literal["console", "json"]
ClusterMtls = Literal["shared", "pki"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting is unknown, malformed or inconsistent. ``str(error)`` is always one line."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        self.message = " ".join(message.splitlines())
        self.setting = setting
        super().__init__(self.message)


# --------------------------------------------------------------------------------------------------
# Casters: text in, typed value out, ``ValueError(reason)`` on failure. The reason is a short clause;
# ``load_settings`` wraps it into the one-line message that names the setting and the value.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caster(Generic[T]):
    """Turns the text of a setting into its typed value; ``kind`` describes the accepted text."""

    kind: str
    parse: Callable[[str], T]

    def __call__(self, raw: str) -> T:
        return self.parse(raw.strip())


def _bounds_reason(low: float | None, high: float | None, show: Callable[[Any], str] = str) -> str:
    if low is not None and high is not None:
        return f"must be between {show(low)} and {show(high)}"
    if low is not None:
        return f"must be at least {show(low)}"
    return f"must be at most {show(high)}"


def _check_bounds(
    value: float, low: float | None, high: float | None, show: Callable[[Any], str] = str
) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(_bounds_reason(low, high, show))


def _range_kind(low: float | None, high: float | None, show: Callable[[Any], str] = str) -> str:
    if low is not None and high is not None:
        return f" ({show(low)}..{show(high)})"
    if low is not None:
        return f" (>= {show(low)})"
    if high is not None:
        return f" (<= {show(high)})"
    return ""


_INT_RE: Final = re.compile(r"-?[0-9]+")


def _parse_int(text: str) -> int:
    if not _INT_RE.fullmatch(text):
        raise ValueError("expected an integer")
    return int(text)


def integer(low: int | None = None, high: int | None = None) -> Caster[int]:
    def parse(text: str) -> int:
        value = _parse_int(text)
        _check_bounds(value, low, high)
        return value

    return Caster("integer" + _range_kind(low, high), parse)


_FLOAT_RE: Final = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def seconds(low: float | None = None, high: float | None = None, *, positive: bool = False) -> Caster[float]:
    """Seconds as a decimal number (``5``, ``0.5``); ``positive`` excludes zero."""

    def parse(text: str) -> float:
        if not _FLOAT_RE.fullmatch(text):
            raise ValueError("expected a number of seconds")
        value = float(text)  # the pattern admits finite decimals only: no nan, inf or exponents
        if positive and value <= 0:
            raise ValueError("must be greater than 0")
        _check_bounds(value, low, high, _show_number)
        return value

    kind = "seconds" + (" (> 0)" if positive else _range_kind(low, high, _show_number))
    return Caster(kind, parse)


def _show_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_TRUE: Final = frozenset({"on", "true", "yes", "1"})
_FALSE: Final = frozenset({"off", "false", "no", "0"})


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected a boolean (on/off, true/false, yes/no, 1/0)")


_BOOL: Final[Caster[bool]] = Caster("boolean (on/off, true/false, yes/no, 1/0)", _parse_bool)


def choice(*options: str) -> Caster[str]:
    """One of a fixed list, matched case-insensitively, returned in its canonical spelling."""

    def parse(text: str) -> str:
        lowered = text.lower()
        if lowered not in options:
            raise ValueError(f"must be one of: {', '.join(options)}")
        return lowered

    return Caster("one of: " + ", ".join(options), parse)


def string(pattern: str | None = None, rule: str = "") -> Caster[str]:
    """A non-empty string, optionally matching ``pattern``; ``rule`` names what it must be, for errors."""
    compiled = re.compile(pattern) if pattern is not None else None

    def parse(text: str) -> str:
        if not text:
            raise ValueError("must not be empty")
        if compiled is not None and not compiled.fullmatch(text):
            raise ValueError(f"must be {rule}")
        return text

    return Caster(f"string: {rule}" if rule else "string", parse)


def optional(inner: Caster[T]) -> Caster[T | None]:
    """An empty value means "not set" and gives ``None`` (Kong: unset values are removed)."""

    def parse(text: str) -> T | None:
        return inner(text) if text else None

    return Caster(inner.kind, parse)


def _parse_path(text: str) -> Path:
    if not text:
        raise ValueError("must not be empty")
    if "\0" in text:
        raise ValueError("must not contain NUL characters")
    return Path(text)


_PATH: Final[Caster[Path]] = Caster("path", _parse_path)


def _parse_cert_path(text: str) -> Path:
    # Kong also takes inline (or base64) PEM here; we take paths only and say so plainly.
    if "-----BEGIN" in text:
        raise ValueError("inline PEM is not supported, give the path of a PEM file")
    return _parse_path(text)


_CERT_PATH: Final[Caster[Path]] = Caster("path of a PEM file", _parse_cert_path)


def _parse_prefix(text: str) -> Path:
    # Like Kong, the prefix is made absolute once, so a later chdir cannot move it.
    return Path(os.path.abspath(_parse_path(text)))


def _parse_log_path(text: str) -> Path | None:
    return None if text.lower() == "off" else _parse_path(text)


_LOG_PATH: Final[Caster[Path | None]] = Caster("path, or off", _parse_log_path)


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


_SIZE_RE: Final = re.compile(r"([0-9]+)\s*([kKmMgG]?)")
_SIZE_UNITS: Final = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _show_size(value: int) -> str:
    for unit in ("g", "m", "k"):
        factor = _SIZE_UNITS[unit]
        if value and value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def size(low: int | None = None, high: int | None = None) -> Caster[int]:
    """Kong's (nginx's) size syntax: a number of bytes with an optional ``k``, ``m`` or ``g`` suffix."""

    def parse(text: str) -> int:
        match = _SIZE_RE.fullmatch(text)
        if not match:
            raise ValueError("expected a size such as 512, 64k, 32m or 2g")
        value = int(match[1]) * _SIZE_UNITS[match[2].lower()]
        _check_bounds(value, low, high, _show_size)
        return value

    return Caster("size in bytes, k, m or g" + _range_kind(low, high, _show_size), parse)


def _parse_workers(text: str) -> int:
    # Kong's nginx_worker_processes: "auto" means one per CPU.
    if text.lower() == "auto":
        return os.cpu_count() or 1
    if not _INT_RE.fullmatch(text):
        raise ValueError("expected an integer or auto")
    value = int(text)
    _check_bounds(value, 1, 1024)
    return value


# ---- listeners ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listen:
    """One entry of a ``*_listen`` setting. ``host`` is bare (no brackets), ``*`` already made 0.0.0.0."""

    host: str
    port: int
    ssl: bool = False
    http2: bool = False
    reuseport: bool = False
    backlog: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        flags = [name for name in ("ssl", "http2", "reuseport") if getattr(self, name)]
        if self.backlog is not None:
            flags.append(f"backlog={self.backlog}")
        return " ".join([f"{host}:{self.port}", *flags])


_LISTEN_FLAGS_DOC: Final = "ssl, http2, reuseport, backlog=N"
_HOSTNAME_LABEL_RE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_NUMERIC_HOST_RE: Final = re.compile(r"[0-9.]+")


def _is_hostname(text: str) -> bool:
    if not text or len(text) > 253:
        return False
    labels = text[:-1].split(".") if text.endswith(".") else text.split(".")
    return all(_HOSTNAME_LABEL_RE.fullmatch(label) for label in labels)


def _parse_port(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"invalid port {text!r}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError("port must be between 1 and 65535")
    return port


def _parse_listen_host(text: str) -> str:
    if text == "*":
        return "0.0.0.0"
    if ":" in text:
        raise ValueError(f"IPv6 address {text!r} must be in brackets, e.g. [::1]:8000")
    if _NUMERIC_HOST_RE.fullmatch(text):
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            raise ValueError(f"invalid IPv4 address {text!r}") from None
    if not _is_hostname(text):
        raise ValueError(f"invalid host {text!r}")
    return text.lower()


def _parse_listen_entry(entry: str) -> Listen:
    address, *flags = entry.split()
    if address.startswith("["):
        inside, bracket, rest = address[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"expected [<ipv6>]:<port>, got {address!r}")
        try:
            host = str(ipaddress.IPv6Address(inside))
        except ValueError:
            raise ValueError(f"invalid IPv6 address {inside!r}") from None
        port_text = rest[1:]
    else:
        host_text, colon, port_text = address.rpartition(":")
        if not colon or not host_text:
            raise ValueError(f"expected <host>:<port>, got {address!r}")
        host = _parse_listen_host(host_text)
    port = _parse_port(port_text)

    options: dict[str, bool] = {"ssl": False, "http2": False, "reuseport": False}
    backlog: int | None = None
    seen: set[str] = set()
    for flag in flags:
        name, equals, arg = flag.lower().partition("=")
        if name in seen:
            raise ValueError(f"flag {name!r} given twice")
        seen.add(name)
        if name in options and not equals:
            options[name] = True
        elif name == "backlog" and equals:
            if not arg.isascii() or not arg.isdigit() or int(arg) < 1:
                raise ValueError(f"backlog must be a positive integer, got {arg!r}")
            backlog = int(arg)
        else:
            raise ValueError(f"unknown flag {flag!r} (supported: {_LISTEN_FLAGS_DOC})")
    return Listen(host, port, options["ssl"], options["http2"], options["reuseport"], backlog)


def _parse_listen(text: str) -> tuple[Listen, ...]:
    entries = _split_list(text)
    if not entries:
        raise ValueError("expected off or <host>:<port> [flags], ...")
    if any(entry.lower() == "off" for entry in entries):
        if len(entries) > 1:
            raise ValueError("off cannot be combined with listeners")
        return ()
    listeners: list[Listen] = []
    for entry in entries:
        try:
            listener = _parse_listen_entry(entry)
        except ValueError as exc:
            if len(entries) == 1:
                raise
            raise ValueError(f"in {entry!r}: {exc}") from None
        if any((other.host, other.port) == (listener.host, listener.port) for other in listeners):
            raise ValueError(f"{listener.host}:{listener.port} is listed twice")
        listeners.append(listener)
    return tuple(listeners)


_LISTEN: Final[Caster[tuple[Listen, ...]]] = Caster(
    f"off, or a comma-separated list of <host>:<port> [{_LISTEN_FLAGS_DOC}]", _parse_listen
)


# ---- labels ---------------------------------------------------------------------------------------

# Kong validates DP labels against its labels AIP (AIP-129): at most 10 labels, key and value 1-63
# characters, starting and ending with an alphanumeric. Keys here are lowercase and start with a letter.
_MAX_LABELS: Final = 10
_LABEL_KEY_RE: Final = re.compile(r"[a-z](?:[a-z0-9_.-]{0,61}[a-z0-9])?")
_LABEL_VALUE_RE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.:-]{0,61}[A-Za-z0-9])?")


def _parse_labels(text: str) -> Mapping[str, str]:
    labels: dict[str, str] = {}
    entries = _split_list(text)
    if len(entries) > _MAX_LABELS:
        raise ValueError(f"at most {_MAX_LABELS} labels are allowed, got {len(entries)}")
    for entry in entries:
        key, colon, value = entry.partition(":")
        key, value = key.strip(), value.strip()
        if not colon:
            raise ValueError(f"label {entry!r} must be key:value")
        if not _LABEL_KEY_RE.fullmatch(key):
            raise ValueError(
                f"label key {key!r} must be 1-63 characters: lowercase letters, digits, '_', '-', '.', "
                "starting with a letter and ending with a letter or digit"
            )
        if not _LABEL_VALUE_RE.fullmatch(value):
            raise ValueError(
                f"label value {value!r} must be 1-63 characters: letters, digits, '_', '-', '.', ':', "
                "starting and ending with a letter or digit"
            )
        if key in labels:
            raise ValueError(f"label key {key!r} is given twice")
        labels[key] = value
    return MappingProxyType(labels)


_LABELS: Final[Caster[Mapping[str, str]]] = Caster("comma-separated key:value pairs", _parse_labels)


# ---- lists ----------------------------------------------------------------------------------------


def _parse_trusted_ips(text: str) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for item in _split_list(text):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR block") from None
    return tuple(networks)


_TRUSTED_IPS: Final[Caster[tuple[IPNetwork, ...]]] = Caster(
    "comma-separated IP addresses or CIDR blocks", _parse_trusted_ips
)


def _parse_nats_urls(text: str) -> tuple[str, ...]:
    urls = _split_list(text)
    if not urls:
        raise ValueError("at least one URL is required")
    for url in urls:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r} is not a valid URL") from None
        if parts.scheme not in ("nats", "tls"):
            raise ValueError(f"{url!r} must start with nats:// or tls://")
        if not parts.hostname:
            raise ValueError(f"{url!r} has no host")
        if port == 0:
            raise ValueError(f"{url!r}: port must be between 1 and 65535")
    return tuple(urls)


_NATS_URLS: Final[Caster[tuple[str, ...]]] = Caster(
    "comma-separated nats:// or tls:// URLs", _parse_nats_urls
)


def _parse_domains(text: str) -> tuple[str, ...]:
    domains = tuple(_split_list(text))
    for domain in domains:
        if not re.match(r"^[A-Za-z0-9_-]+$", domain):
            raise ValueError(f"{domain!r} is not a JetStream domain (letters, digits, '-' and '_')")
    return domains


_DOMAINS: Final[Caster[tuple[str, ...]]] = Caster("comma-separated JetStream domains", _parse_domains)

_PLUGIN_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")


def _parse_plugins(text: str) -> tuple[str, ...]:
    names = [name.lower() for name in _split_list(text)]
    if "off" in names:
        if len(names) > 1:
            raise ValueError("off cannot be combined with plugin names")
        return ()
    for name in names:
        if not _PLUGIN_NAME_RE.fullmatch(name):
            raise ValueError(f"invalid plugin name {name!r}")
    return tuple(names)


_PLUGINS: Final[Caster[tuple[str, ...]]] = Caster(
    "off, or bundled and/or plugin names, comma-separated", _parse_plugins
)

# Kong's accepted tokens for the ``headers`` setting (kong/conf_loader/constants.lua, HEADER_KEY_TO_NAME).
HEADER_TOKENS: Final = (
    "server_tokens",
    "latency_tokens",
    "via",
    "server",
    "x-kong-proxy-latency",
    "x-kong-response-latency",
    "x-kong-admin-latency",
    "x-kong-upstream-latency",
    "x-kong-upstream-status",
    "x-kong-request-id",
)


def _parse_headers(text: str) -> tuple[str, ...]:
    tokens = [token.lower() for token in _split_list(text)]
    if "off" in tokens:
        if len(tokens) > 1:
            raise ValueError("off cannot be combined with header names")
        return ()
    for token in tokens:
        if token not in HEADER_TOKENS:
            raise ValueError(f"invalid entry {token!r} (allowed: off, {', '.join(HEADER_TOKENS)})")
    return tuple(tokens)


_HEADERS: Final[Caster[tuple[str, ...]]] = Caster(
    "off, or a comma-separated list of header tokens", _parse_headers
)


def _parse_dsn(text: str) -> str:
    # Only the scheme is checked: libpq/asyncpg URLs may list several hosts, which urlsplit cannot parse.
    try:
        scheme = urlsplit(text).scheme
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if scheme not in ("postgresql", "postgres"):
        raise ValueError("must be a postgresql:// or postgres:// URL")
    return text


_DSN: Final[Caster[str]] = Caster("postgresql:// URL", _parse_dsn)

_NAME_TOKEN_RULE: Final = (
    "1-64 letters, digits, '_' or '-' (it becomes part of NATS subjects and stream names)"
)
_NAME_TOKEN_RE: Final = r"[A-Za-z0-9_-]{1,64}"
_HTTP_TOKEN_RE: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"


def _parse_server_name(text: str) -> str:
    if not _is_hostname(text):
        raise ValueError("must be a DNS name")
    return text


# --------------------------------------------------------------------------------------------------
# The table. ``default`` is the text as it would appear in zonegate.conf; "" means "not set".
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SettingSpec:
    name: str
    caster: Caster[Any]
    default: str
    description: str
    kong_name: str | None = None
    sensitive: bool = False

    @property
    def env_name(self) -> str:
        return env_name(self.name)


def env_name(name: str) -> str:
    """``proxy_listen`` -> ``ZONEGATE_PROXY_LISTEN``."""
    return ENV_PREFIX + name.upper()


def _spec(
    name: str,
    caster: Caster[Any],
    default: str,
    description: str,
    *,
    kong: bool | str = True,
    sensitive: bool = False,
) -> SettingSpec:
    kong_name = name if kong is True else (kong or None)
    return SettingSpec(name, caster, default, description, kong_name, sensitive)


SETTING_SPECS: Final[tuple[SettingSpec, ...]] = (
    # ---- node ----
    _spec(
        "role",
        choice("traditional", "control_plane", "data_plane"),
        "traditional",
        "traditional (Admin API and proxy in one node), control_plane or data_plane.",
    ),
    _spec(
        "database",
        choice("postgres", "off"),
        "postgres",
        "postgres, or off for a node without a database (required on a data plane).",
    ),
    _spec(
        "prefix",
        Caster("path", _parse_prefix),
        ".zonegate",
        "Working directory; relative paths resolve here.",
    ),
    _spec(
        "log_level",
        choice("debug", "info", "notice", "warn", "error", "crit"),
        "info",
        "Lowest level written to the logs.",
    ),
    _spec("log_format", choice("console", "json"), "console", "console (readable) or json.", kong=False),
    _spec(
        "workers",
        Caster("integer (1..1024), or auto", _parse_workers),
        "auto",
        "Proxy worker processes; auto means one per CPU.",
        kong="nginx_worker_processes",
    ),
    _spec("plugins", _PLUGINS, "bundled", "Plugins this node loads: bundled, extra names, or off."),
    _spec(
        "declarative_config",
        optional(_PATH),
        "",
        "Kong-format declarative file (_format_version 3.0) loaded when database = off.",
    ),
    _spec(
        "headers",
        _HEADERS,
        "server_tokens, latency_tokens",
        "Headers the proxy adds to responses (Kong's tokens), or off.",
    ),
    _spec(
        "admin_token",
        optional(string()),
        "",
        "Token every Admin API request must carry; not set means no token is required.",
        kong=False,
        sensitive=True,
    ),
    # ---- listeners ----
    _spec("proxy_listen", _LISTEN, "0.0.0.0:8000, 0.0.0.0:8443 ssl", "Proxy listeners, or off."),
    _spec("admin_listen", _LISTEN, "127.0.0.1:8001, 127.0.0.1:8444 ssl", "Admin API listeners, or off."),
    _spec("admin_gui_listen", _LISTEN, "0.0.0.0:8002, 0.0.0.0:8445 ssl", "Manager GUI listeners, or off."),
    # Kong 3.6+ defaults status_listen to 127.0.0.1:8007; DESIGN.md puts the DP status API on :8100.
    _spec(
        "status_listen", _LISTEN, "127.0.0.1:8100", "Status API listeners (/status, /status/ready, /metrics)."
    ),
    # ---- proxy ----
    _spec("proxy_access_log", _LOG_PATH, "logs/access.log", "Proxy access log (relative to prefix), or off."),
    _spec("proxy_error_log", _PATH, "logs/error.log", "Proxy error log (relative to prefix)."),
    _spec(
        "real_ip_header",
        string(_HTTP_TOKEN_RE, "an HTTP header name"),
        "X-Real-IP",
        "Header holding the client address when the peer is in trusted_ips.",
    ),
    _spec("real_ip_recursive", _BOOL, "off", "Take the last untrusted address of real_ip_header."),
    _spec("trusted_ips", _TRUSTED_IPS, "", "Peers (IPs or CIDR blocks) whose real_ip_header is believed."),
    _spec(
        "client_max_body_size",
        size(0),
        "0",
        "Largest request body accepted; 0 means unlimited.",
        kong="nginx_http_client_max_body_size",
    ),
    _spec(
        "max_request_header_size",
        size(1024, 16 * 1024**2),
        "32k",
        "Largest request line plus headers accepted (nginx large_client_header_buffers).",
        kong=False,
    ),
    _spec(
        "max_request_headers",
        integer(1, 1000),
        "100",
        "Most request headers accepted.",
        kong="lua_max_req_headers",
    ),
    _spec("upstream_keepalive_pool_size", integer(0), "512", "Idle upstream connections kept; 0 disables."),
    _spec(
        "upstream_keepalive_max_requests",
        integer(0),
        "10000",
        "Requests per upstream connection; 0: no limit.",
    ),
    _spec(
        "upstream_keepalive_idle_timeout",
        seconds(0),
        "60",
        "Seconds an idle upstream connection is kept.",
    ),
    _spec(
        "client_header_timeout",
        seconds(positive=True),
        "60",
        "Seconds a client may take to send a request head; then 408 and close.",
        kong="nginx_http_client_header_timeout",
    ),
    _spec(
        "client_body_timeout",
        seconds(positive=True),
        "60",
        "Seconds a client may stay silent while sending a request body; then 408 and close.",
        kong="nginx_http_client_body_timeout",
    ),
    _spec(
        "keepalive_timeout",
        seconds(positive=True),
        "60",
        "Seconds an idle keep-alive client connection is kept open.",
        kong="nginx_http_keepalive_timeout",
    ),
    # ---- PostgreSQL ----
    _spec("pg_host", string(), "127.0.0.1", "PostgreSQL host (or a Unix socket directory)."),
    _spec("pg_port", integer(1, 65535), "5432", "PostgreSQL port."),
    _spec("pg_user", string(), "zonegate", "PostgreSQL user."),
    _spec("pg_password", optional(string()), "", "PostgreSQL password.", sensitive=True),
    _spec("pg_database", string(), "zonegate", "PostgreSQL database."),
    _spec("pg_ssl", _BOOL, "off", "Connect to PostgreSQL over TLS (sslmode=require)."),
    _spec(
        "pg_timeout", integer(1, 3_600_000), "5000", "PostgreSQL connect and query timeout, in milliseconds."
    ),
    _spec(
        "pg_dsn",
        optional(_DSN),
        "",
        "Full postgresql:// URL; when set it wins over the pg_* parts.",
        kong=False,
        sensitive=True,
    ),
    # ---- cluster ----
    _spec(
        "cluster_mtls",
        choice("shared", "pki"),
        "shared",
        "shared: one cert for all nodes; pki: CA-signed certs.",
    ),
    _spec("cluster_cert", optional(_CERT_PATH), "", "Cluster mTLS certificate (PEM file)."),
    _spec("cluster_cert_key", optional(_CERT_PATH), "", "Cluster mTLS private key (PEM file)."),
    _spec(
        "cluster_ca_cert", optional(_CERT_PATH), "", "CA that signs cluster certificates; required when pki."
    ),
    _spec(
        "cluster_server_name",
        optional(Caster("DNS name", _parse_server_name)),
        "",
        "Name verified in the bus server certificate (pki).",
    ),
    _spec("cluster_dp_labels", _LABELS, "", "key:value labels a data plane reports, e.g. deployment:local."),
    _spec(
        "cluster_data_plane_purge_delay",
        integer(60),
        "1209600",
        "Seconds after which an unseen data plane is dropped from the list (14 days).",
    ),
    _spec(
        "cluster_nats_url",
        _NATS_URLS,
        "tls://127.0.0.1:4222",
        "NATS servers of the bus (replaces Kong's cluster_control_plane).",
        kong=False,
    ),
    _spec(
        "cluster_name",
        string(_NAME_TOKEN_RE, _NAME_TOKEN_RULE),
        "default",
        "Name of this cluster on the bus; scopes subjects and streams.",
        kong=False,
    ),
    _spec(
        "cluster_js_domain",
        optional(string(_NAME_TOKEN_RE, _NAME_TOKEN_RULE)),
        "",
        "JetStream domain holding the config stream (a region's local copy).",
        kong=False,
    ),
    _spec(
        "cluster_hub_js_domain",
        optional(string(_NAME_TOKEN_RE, _NAME_TOKEN_RULE)),
        "",
        "A region's data plane: the hub's JetStream domain, where cluster rate-limiting counters live; "
        "not set: cluster_js_domain.",
        kong=False,
    ),
    _spec(
        "cluster_region_domains",
        _DOMAINS,
        "",
        "JetStream domains of regions where the control plane keeps a mirror of the config stream.",
        kong=False,
    ),
    _spec(
        "cluster_js_replicas",
        integer(1, 5),
        "1",
        "Replicas of the config stream, snapshot store and rate-limiting counters in the hub's JetStream "
        "cluster (control plane).",
        kong=False,
    ),
    _spec(
        "cluster_snapshot_history",
        integer(1, 10_000),
        "10",
        "Config snapshots the config stream keeps per cluster.",
        kong=False,
    ),
    _spec(
        "cluster_publish_interval",
        seconds(0, 60),
        "0.1",
        "Least time between two config publications; changes meanwhile go out as one snapshot.",
        kong=False,
    ),
    _spec(
        "cluster_heartbeat_interval",
        seconds(0.1, 3600),
        "10",
        "Seconds between a data plane's heartbeats.",
        kong=False,
    ),
    _spec(
        "cluster_watchdog_interval",
        seconds(0.1, 3600),
        "30",
        "A data plane re-reads the latest snapshot from the bus at least this often.",
        kong=False,
    ),
    _spec(
        "data_plane_cache_encryption",
        _BOOL,
        "off",
        "Encrypt the data plane's LMDB cache with a key derived from the cluster key.",
        kong=False,
    ),
    _spec("lmdb_environment_path", _PATH, "dbless.lmdb", "Data plane config cache (relative to prefix)."),
    _spec("lmdb_map_size", size(1024**2), "2048m", "Largest size of the LMDB cache."),
    _spec(
        "db_update_frequency",
        seconds(positive=True),
        "5",
        "Seconds between config publications on the control plane (the debounce window).",
    ),
)

SPECS_BY_NAME: Final[Mapping[str, SettingSpec]] = MappingProxyType(
    {spec.name: spec for spec in SETTING_SPECS}
)


# --------------------------------------------------------------------------------------------------
# The settings object. Field order and names mirror SETTING_SPECS (a test checks it).
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    role: Role
    database: Database
    prefix: Path
    log_level: LogLevel
    log_format: LogFormat
    workers: int
    plugins: tuple[str, ...]
    declarative_config: Path | None
    headers: tuple[str, ...]
    admin_token: str | None = field(repr=False)

    proxy_listen: tuple[Listen, ...]
    admin_listen: tuple[Listen, ...]
    admin_gui_listen: tuple[Listen, ...]
    status_listen: tuple[Listen, ...]

    proxy_access_log: Path | None
    proxy_error_log: Path
    real_ip_header: str
    real_ip_recursive: bool
    trusted_ips: tuple[IPNetwork, ...]
    client_max_body_size: int
    max_request_header_size: int
    max_request_headers: int
    upstream_keepalive_pool_size: int
    upstream_keepalive_max_requests: int
    upstream_keepalive_idle_timeout: float
    client_header_timeout: float
    client_body_timeout: float
    keepalive_timeout: float

    pg_host: str
    pg_port: int
    pg_user: str
    pg_password: str | None = field(repr=False)
    pg_database: str
    pg_ssl: bool
    pg_timeout: int
    pg_dsn: str | None = field(repr=False)

    cluster_mtls: ClusterMtls
    cluster_cert: Path | None
    cluster_cert_key: Path | None
    cluster_ca_cert: Path | None
    cluster_server_name: str | None
    cluster_dp_labels: Mapping[str, str] = field(hash=False)
    cluster_data_plane_purge_delay: int
    cluster_nats_url: tuple[str, ...]
    cluster_name: str
    cluster_js_domain: str | None
    cluster_hub_js_domain: str | None
    cluster_region_domains: tuple[str, ...]
    cluster_js_replicas: int
    cluster_snapshot_history: int
    cluster_publish_interval: float
    cluster_heartbeat_interval: float
    cluster_watchdog_interval: float
    data_plane_cache_encryption: bool
    lmdb_environment_path: Path
    lmdb_map_size: int
    db_update_frequency: float

    @property
    def is_control_plane(self) -> bool:
        return self.role == "control_plane"

    @property
    def is_data_plane(self) -> bool:
        return self.role == "data_plane"

    @property
    def hub_js_domain(self) -> str | None:
        """The JetStream domain of the hub's streams (the config stream's origin, the rate-limiting
        counters): ``cluster_hub_js_domain`` on a region's data plane, else ``cluster_js_domain``."""
        return self.cluster_hub_js_domain or self.cluster_js_domain

    @property
    def serves_proxy(self) -> bool:
        return self.role in ("traditional", "data_plane")

    @property
    def serves_admin(self) -> bool:
        return self.role in ("traditional", "control_plane")

    def resolve_path(self, p: Path | str) -> Path:
        """``p`` itself if absolute, else ``p`` under ``prefix`` (how Kong reads its relative paths)."""
        candidate = Path(p)
        return candidate if candidate.is_absolute() else self.prefix / candidate

    def postgres_dsn(self) -> str:
        """``pg_dsn`` if set, else a postgresql:// URL from the ``pg_*`` parts (user and password quoted)."""
        if self.pg_dsn is not None:
            return self.pg_dsn
        auth = quote(self.pg_user, safe="")
        if self.pg_password is not None:
            auth += ":" + quote(self.pg_password, safe="")
        query: dict[str, str] = {}
        if self.pg_host.startswith("/"):  # a Unix socket directory goes in the query, as libpq allows
            netloc = f"{auth}@"
            query["host"] = self.pg_host
            query["port"] = str(self.pg_port)
        else:
            host = f"[{self.pg_host}]" if ":" in self.pg_host else self.pg_host
            netloc = f"{auth}@{quote(host, safe='[]:')}:{self.pg_port}"
        query["sslmode"] = "require" if self.pg_ssl else "disable"
        return f"postgresql://{netloc}/{quote(self.pg_database, safe='')}?{urlencode(query, quote_via=quote)}"


# --------------------------------------------------------------------------------------------------
# Cross-setting rules (Kong's conf_loader rules, adapted): the first violated rule, as one line.
# --------------------------------------------------------------------------------------------------


def check_settings(settings: Settings) -> None:
    """Raise ``SettingsError`` for the first rule that ``settings`` breaks."""
    s = settings
    if s.is_data_plane and s.database != "off":
        raise SettingsError(
            f"database must be off when role = data_plane (got database = {s.database}); "
            "set ZONEGATE_DATABASE=off",
            setting="database",
        )
    if s.is_control_plane and s.database == "off":
        raise SettingsError(
            "database = off cannot be used when role = control_plane; the control plane needs postgres",
            setting="database",
        )
    if s.is_control_plane and not s.admin_listen:
        raise SettingsError("admin_listen must not be off when role = control_plane", setting="admin_listen")
    if s.is_data_plane and not s.proxy_listen:
        raise SettingsError("proxy_listen must not be off when role = data_plane", setting="proxy_listen")
    if s.cluster_dp_labels and not s.is_data_plane:
        raise SettingsError(
            f"cluster_dp_labels can only be used when role = data_plane (role is {s.role})",
            setting="cluster_dp_labels",
        )
    if s.cluster_hub_js_domain is not None and not s.is_data_plane:
        raise SettingsError(
            f"cluster_hub_js_domain can only be used when role = data_plane (role is {s.role}); "
            "a control plane's hub domain is its cluster_js_domain",
            setting="cluster_hub_js_domain",
        )
    if s.cluster_region_domains and s.cluster_js_domain is None:
        raise SettingsError(
            "cluster_region_domains needs cluster_js_domain: the hub domain the region mirrors copy from",
            setting="cluster_js_domain",
        )
    if s.cluster_js_domain is not None and s.cluster_js_domain in s.cluster_region_domains:
        raise SettingsError(
            f"cluster_region_domains must not contain cluster_js_domain ({s.cluster_js_domain})",
            setting="cluster_region_domains",
        )
    if s.cluster_mtls == "pki" and s.cluster_ca_cert is None:
        raise SettingsError("cluster_ca_cert must be set when cluster_mtls = pki", setting="cluster_ca_cert")
    if (s.cluster_cert is None) != (s.cluster_cert_key is None):
        missing = "cluster_cert_key" if s.cluster_cert_key is None else "cluster_cert"
        raise SettingsError("cluster_cert and cluster_cert_key must be set together", setting=missing)
    if s.cluster_data_plane_purge_delay < 60:
        raise SettingsError(
            f"cluster_data_plane_purge_delay must be 60 or greater (got {s.cluster_data_plane_purge_delay})",
            setting="cluster_data_plane_purge_delay",
        )
    if s.declarative_config is not None and s.database != "off":
        raise SettingsError(
            f"declarative_config can only be used with database = off (database is {s.database})",
            setting="declarative_config",
        )


# --------------------------------------------------------------------------------------------------
# Sources and loading.
# --------------------------------------------------------------------------------------------------


class ConfEntry(NamedTuple):
    value: str
    line: int


_CONF_LINE_RE: Final = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)")


def _strip_comment(line: str) -> str:
    # Kong's kong.conf rule: '#' starts a comment anywhere; '\#' is a literal '#'.
    out: list[str] = []
    i = 0
    while i < len(line):
        char = line[i]
        if char == "\\" and line.startswith("#", i + 1):
            out.append("#")
            i += 2
            continue
        if char == "#":
            break
        out.append(char)
        i += 1
    return "".join(out)


def parse_conf(text: str, source: str) -> dict[str, ConfEntry]:
    """Parse kong.conf-style text into lower-case names; ``source`` names the file in errors.

    Syntax only: unknown names are reported by ``load_settings``.
    """
    entries: dict[str, ConfEntry] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw_line).strip()
        if not line:
            continue
        match = _CONF_LINE_RE.fullmatch(line)
        if not match:
            raise SettingsError(f"invalid line in {source} line {number}: expected name = value")
        name = match[1].lower()
        if name in entries:
            raise SettingsError(
                f"setting {name!r} is set twice in {source} (lines {entries[name].line} and {number})",
                setting=name,
            )
        entries[name] = ConfEntry(match[2].strip(), number)
    return entries


def _read_conf_file(conf_path: Path) -> dict[str, ConfEntry]:
    try:
        text = conf_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SettingsError(f"conf file not found: {conf_path}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"cannot read conf file {conf_path}: not valid UTF-8") from None
    except OSError as exc:
        raise SettingsError(f"cannot read conf file {conf_path}: {exc.strerror or exc}") from None
    return parse_conf(text, str(conf_path))


def conf_path_from_env(environ: Mapping[str, str]) -> Path | None:
    """The conf file named by ``ZONEGATE_CONF``, or ``None`` when it is unset or empty."""
    value = environ.get(CONF_ENV, "").strip()
    return Path(value) if value else None


def _suggest(name: str) -> str | None:
    matches = difflib.get_close_matches(name, SPECS_BY_NAME.keys(), n=1)
    return matches[0] if matches else None


class _Raw(NamedTuple):
    text: str
    origin: str  # how error messages name where the value came from


def _env_values(environ: Mapping[str, str]) -> dict[str, _Raw]:
    found: dict[str, _Raw] = {}
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX) or key == CONF_ENV or key.startswith(TEST_ENV_PREFIX):
            continue
        name = key.removeprefix(ENV_PREFIX).lower()
        if name not in SPECS_BY_NAME or key != env_name(name):
            suggestion = _suggest(name)
            hint = f" (did you mean {env_name(suggestion)}?)" if suggestion else ""
            raise SettingsError(f"unknown setting {key}{hint}", setting=None)
        found[name] = _Raw(environ[key], key)
    return found


def _file_values(conf_path: Path) -> dict[str, _Raw]:
    found: dict[str, _Raw] = {}
    for name, entry in _read_conf_file(conf_path).items():
        where = f"in {conf_path} line {entry.line}"
        if name not in SPECS_BY_NAME:
            suggestion = _suggest(name)
            hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
            raise SettingsError(f"unknown setting {name!r} {where}{hint}")
        found[name] = _Raw(entry.value, f"{name} {where}")
    return found


def _cast(spec: SettingSpec, raw: _Raw) -> Any:
    try:
        return spec.caster(raw.text)
    except ValueError as exc:
        shown = HIDDEN if spec.sensitive else repr(raw.text.strip())
        raise SettingsError(f"invalid {raw.origin}: {shown}: {exc}", setting=spec.name) from None


def load_settings(environ: Mapping[str, str], conf_path: Path | None = None) -> Settings:
    """Read, cast and check every setting: environment over conf file over default.

    ``conf_path`` is the conf file to read (an error if it does not exist), or ``None`` for none;
    the CLI gets it from its option or from ``conf_path_from_env(environ)``.
    """
    raw: dict[str, _Raw] = {}
    if conf_path is not None:
        raw.update(_file_values(conf_path))
    raw.update(_env_values(environ))
    values = {
        spec.name: _cast(spec, raw.get(spec.name) or _Raw(spec.default, f"default of {spec.name}"))
        for spec in SETTING_SPECS
    }
    settings = Settings(**values)
    check_settings(settings)
    return settings
