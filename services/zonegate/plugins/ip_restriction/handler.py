"""ip-restriction's handler (Kong's ``kong/plugins/ip-restriction/handler.lua``, 3.x behaviour).

The client address is Kong's (``kong.client.get_ip``: the peer, or behind ``trusted_ips`` the
``real_ip_header`` address). ``deny`` is checked first, then ``allow``; a refused request gets
``status`` (403) and ``message`` (``Your IP address is not allowed``) as Kong's error body.
Networks are parsed once, when the config is applied: single addresses go in a set, ranges in
a list per address family. An IPv4 client seen on a dual-stack socket (``::ffff:a.b.c.d``) is
matched as the IPv4 address it is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from zonegate import __version__
from zonegate.plugins.api import AccessResult, Exit, Plugin, PluginContext, SharedIndexes

NOT_ALLOWED: Final = "Your IP address is not allowed"
UNIDENTIFIED: Final = "Cannot identify the client IP address, unix domain sockets are not supported."

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Networks:
    """A compiled allow or deny list."""

    __slots__ = ("addresses", "ranges")

    def __init__(self, entries: Iterable[str]) -> None:
        self.addresses: set[IPAddress] = set()
        self.ranges: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            network = ipaddress.ip_network(entry, strict=False)
            if network.num_addresses == 1:
                self.addresses.add(network.network_address)
            else:
                self.ranges.append(network)

    def __contains__(self, address: IPAddress) -> bool:
        return address in self.addresses or any(address in network for network in self.ranges)


def client_address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class IpRestriction(Plugin):
    NAME = "ip-restriction"
    PRIORITY = 990
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        config = self.config
        # An empty list is no list (Kong's ``#conf.deny > 0``).
        self.deny = Networks(config["deny"]) if config.get("deny") else None
        self.allow = Networks(config["allow"]) if config.get("allow") else None
        status = config.get("status")
        self.refusal = Exit(int(status) if status is not None else 403, config.get("message") or NOT_ALLOWED)

    def access(self, ctx: PluginContext) -> AccessResult:
        address = client_address(ctx.client_ip)
        if address is None:
            return Exit(403, UNIDENTIFIED)
        if self.deny is not None and address in self.deny:
            return self.refusal
        if self.allow is not None and address not in self.allow:
            return self.refusal
        return None
