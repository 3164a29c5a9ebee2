"""The local stack's ports: Kong's defaults where Kong has one, each one a ``zonegate up`` option.

Every port is checked before anything starts, so a taken one is one clear line naming the
option that moves it, not a half-started stack.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, fields

from zonegate.embedded.ports import LOOPBACK


class StackError(Exception):
    """A start-up failure the user can fix (a port in use, a database refusing us); one line."""


@dataclass(frozen=True, slots=True)
class StackPorts:
    nats: int = 4222
    pg: int = 5432
    admin: int = 8001  # Kong's Admin API
    proxy_a: int = 8000  # Kong's proxy, for the data plane in zone a
    proxy_b: int = 8010
    status_a: int = 8100  # Kong's Status API
    status_b: int = 8110
    upstream: int = 9000  # the demo upstream the sample service points at

    @staticmethod
    def option(name: str) -> str:
        """The ``zonegate up`` option that sets port ``name``."""
        return f"--{name.replace('_', '-')}-port"

    def proxy(self, zone: str) -> int:
        return int(getattr(self, f"proxy_{zone}"))

    def status(self, zone: str) -> int:
        return int(getattr(self, f"status_{zone}"))

    def items(self) -> Iterator[tuple[str, int]]:
        for spec in fields(self):
            yield spec.name, getattr(self, spec.name)


def ensure_free(ports: StackPorts, *, skip: frozenset[str] = frozenset()) -> None:
    """Raise ``StackError`` for the first port that is taken or given twice."""
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if name in skip:
            continue
        if port in seen:
            raise StackError(
                f"port {port} is given for both {seen[port]} and {name} "
                f"(choose another with {StackPorts.option(name)})"
            )
        seen[port] = name
        _ensure_port_free(name, port)


def _ensure_port_free(name: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR as the servers themselves use it: a port left in TIME_WAIT by our own last
        # run is free to them, and only a live listener counts as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            raise StackError(
                f"port {port} for {name.replace('_', '-')} is already in use on {LOOPBACK} "
                f"(choose another with {StackPorts.option(name)})"
            ) from None
