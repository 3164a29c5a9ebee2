"""Host names, IP addresses and ports as Kong's schemas accept them (pure parsing, no lookups)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final, Literal

_LABEL: Final = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME_RE: Final = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_BRACKETED_RE: Final = re.compile(r"^\[([0-9A-Fa-f:.]+)\](?::(\d+))?$")


@dataclass(frozen=True, slots=True)
class HostPort:
    type: Literal["ipv4", "ipv6", "name"]
    host: str
    port: int | None

    def render(self, default_port: int | None = None) -> str:
        """``host:port`` with IPv6 in brackets, as Kong writes targets."""
        host = f"[{self.host}]" if self.type == "ipv6" else self.host
        port = self.port if self.port is not None else default_port
        return host if port is None else f"{host}:{port}"


class HostError(ValueError):
    """``invalid`` is true for a malformed value, false for a well-formed one with a bad port."""

    def __init__(self, message: str, *, bad_port: bool = False) -> None:
        super().__init__(message)
        self.bad_port = bad_port


def _port(text: str, original: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise HostError(f"invalid value: {original}")
    value = int(text)
    if not 0 <= value <= 65535:
        raise HostError("invalid port number", bad_port=True)
    return value


def parse_host_port(value: str) -> HostPort:
    """Split ``host[:port]``: an IPv4, a bracketed (or bare) IPv6, or a DNS name."""
    bracketed = _BRACKETED_RE.match(value)
    if bracketed:
        try:
            address = ipaddress.IPv6Address(bracketed.group(1))
        except ValueError:
            raise HostError(f"invalid value: {value}") from None
        port = _port(bracketed.group(2), value) if bracketed.group(2) else None
        return HostPort("ipv6", address.compressed, port)
    if value.count(":") > 1:
        try:
            return HostPort("ipv6", ipaddress.IPv6Address(value).compressed, None)
        except ValueError:
            raise HostError(f"invalid value: {value}") from None
    host, sep, port_text = value.partition(":")
    port = _port(port_text, value) if sep else None
    if re.fullmatch(r"[0-9.]+", host):
        try:
            return HostPort("ipv4", str(ipaddress.IPv4Address(host)), port)
        except ValueError:
            raise HostError(f"invalid value: {value}") from None
    if len(host) > 253 or not _HOSTNAME_RE.match(host):
        raise HostError(f"invalid value: {value}")
    # The case is kept: Kong stores and shows names as given (DNS ignores it anyway).
    return HostPort("name", host, port)


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_ip_or_cidr(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True
