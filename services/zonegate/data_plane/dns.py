"""Name resolution for targets given by hostname: non-blocking, cached, re-resolved on expiry.

Kong resolves a target's name with its own DNS client, honours each record's TTL and adds every
address of the answer to the balancer. We resolve with ``loop.getaddrinfo`` (the system resolver in
the loop's default executor, so the event loop never blocks). getaddrinfo reports no TTL, so every
answer lives ``ttl`` seconds (30 by default, like Kong's ``REQUERY_INTERVAL``) and a failed lookup is
retried after ``error_ttl`` seconds.

Choices, and why:
- IPv4 first. Kong's default ``dns_order`` (LAST, SRV, A, CNAME) never asks for AAAA, so a name that
  has both gets its IPv4 addresses; we fall back to IPv6 only when a name has no IPv4 address at all.
  Taking both would, for ``localhost``, add ``::1`` where most local services do not listen.
- Stale on error. When a re-resolution fails, the previous addresses are kept (with the error noted),
  as Kong's client serves stale records: a DNS hiccup must not empty a healthy balancer.
- One lookup per name at a time: concurrent callers share it.

Invariant: ``Resolution.addresses`` is sorted and free of duplicates, so two equal answers compare equal
and a balancer is rebuilt only when the set of addresses really changed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Final, Literal

DEFAULT_TTL: Final = 30.0
DEFAULT_ERROR_TTL: Final = 5.0
DEFAULT_TIMEOUT: Final = 5.0

RecordType = Literal["A", "AAAA"]


@dataclass(frozen=True, slots=True)
class Resolution:
    """One answer: ``addresses`` (maybe stale, see ``error``) valid until ``expires`` (loop time)."""

    name: str
    addresses: tuple[str, ...]
    record_type: RecordType | None
    error: str | None
    expires: float

    @property
    def ok(self) -> bool:
        return self.error is None


def ip_record_type(value: str) -> RecordType | None:
    """The record type of an IP literal ("A" or "AAAA"), None for a name."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return "A" if address.version == 4 else "AAAA"


class Resolver:
    """A small caching resolver. ``resolve`` never raises for a lookup failure: it returns the error."""

    __slots__ = ("_cache", "_closed", "_error_ttl", "_inflight", "_timeout", "_ttl")

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        error_ttl: float = DEFAULT_ERROR_TTL,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if ttl <= 0 or error_ttl <= 0 or timeout <= 0:
            raise ValueError("ttl, error_ttl and timeout must be positive")
        self._ttl = ttl
        self._error_ttl = error_ttl
        self._timeout = timeout
        self._cache: dict[str, Resolution] = {}
        self._inflight: dict[str, asyncio.Task[Resolution]] = {}
        self._closed = False

    def cached(self, name: str) -> Resolution | None:
        """The last answer for ``name``, expired or not (None if never resolved)."""
        return self._cache.get(name)

    async def resolve(self, name: str) -> Resolution:
        """The cached answer while it is fresh; otherwise a new lookup (shared with concurrent callers)."""
        loop = asyncio.get_running_loop()
        record_type = ip_record_type(name)
        if record_type is not None:
            return Resolution(name, (name,), record_type, None, float("inf"))
        cached = self._cache.get(name)
        if cached is not None and cached.expires > loop.time():
            return cached
        if self._closed:
            raise RuntimeError("resolver is closed")
        task = self._inflight.get(name)
        if task is None:
            task = loop.create_task(self._lookup(name), name=f"dns:{name}")
            self._inflight[name] = task
            task.add_done_callback(lambda done: self._finish(name, done))
        # Shielded: a caller that gives up (timeout, cancellation) must not cancel the lookup others
        # wait for; the answer is cached when it arrives anyway.
        return await asyncio.shield(task)

    def _finish(self, name: str, task: asyncio.Task[Resolution]) -> None:
        if self._inflight.get(name) is task:
            del self._inflight[name]
        if not task.cancelled():
            self._cache[name] = task.result()  # _lookup turns every failure into a Resolution

    async def _lookup(self, name: str) -> Resolution:
        loop = asyncio.get_running_loop()
        error: str
        try:
            async with asyncio.timeout(self._timeout):
                infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except TimeoutError:
            error = f"dns lookup of {name} timed out after {self._timeout:g}s"
        except socket.gaierror as exc:
            error = f"dns lookup of {name} failed: {exc.strerror or exc}"
        except OSError as exc:
            error = f"dns lookup of {name} failed: {exc}"
        else:
            v4 = {str(info[4][0]) for info in infos if info[0] == socket.AF_INET}
            v6 = {str(info[4][0]).partition("%")[0] for info in infos if info[0] == socket.AF_INET6}
            record_type: RecordType = "A" if v4 else "AAAA"
            chosen = v4 or v6
            if chosen:
                addresses = tuple(sorted(chosen, key=ipaddress.ip_address))
                return Resolution(name, addresses, record_type, None, loop.time() + self._ttl)
            error = f"dns lookup of {name} returned no address"
        stale = self._cache.get(name)
        addresses, stale_type = (stale.addresses, stale.record_type) if stale is not None else ((), None)
        return Resolution(name, addresses, stale_type, error, loop.time() + self._error_ttl)

    async def aclose(self) -> None:
        """Cancel lookups under way and wait for them (the executor thread may finish on its own)."""
        self._closed = True
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        # return_exceptions: our own cancellation still propagates, the lookups' does not.
        await asyncio.gather(*tasks, return_exceptions=True)
