"""The client's address as Kong sees it: nginx's realip module (``trusted_ips``, ``real_ip_header``,
``real_ip_recursive``), which is what ``kong.client.get_ip`` and ip-restriction read.

Only a peer in ``trusted_ips`` is believed. The header is read from its right end: the last
address replaces the peer's; with ``real_ip_recursive``, while the address taken is itself
trusted, the one to its left is taken next. An address that does not parse stops the walk and
keeps what was found so far (``ngx_http_get_forwarded_addr``). Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Final

_SEPARATORS: Final = re.compile(r"[ ,]+")


def parse_forwarded_address(token: str) -> str | None:
    """An address as a proxy header carries it, maybe with a port (``1.2.3.4:80``, ``[::1]:80``)."""
    host = token
    if token.startswith("["):
        end = token.find("]")
        if end == -1:
            return None
        host = token[1:end]
    elif token.count(":") == 1:
        host = token.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def real_client_ip(
    peer: str, header_value: str | None, is_trusted: Callable[[str], bool], recursive: bool
) -> str:
    address = peer
    if not header_value:
        return address
    tokens = [token for token in _SEPARATORS.split(header_value) if token]
    while tokens and is_trusted(address):
        found = parse_forwarded_address(tokens.pop())
        if found is None:
            break
        address = found
        if not recursive:
            break
    return address
