"""The memory strategy's store: cached responses in this proxy process, by cache key.

Kong keeps them in an nginx shared dictionary that every worker of a node reads; Zonegate keeps
one store per dictionary name in each proxy process (with ``ZONEGATE_WORKERS`` above 1 each
worker fills its own). Stores live at module level, so a config reload keeps what they hold, as
Kong's dictionaries do.

Invariants: a store never holds more than ``max_bytes`` (bodies, headers and keys counted, plus
a fixed overhead per entry) nor more than ``max_entries``; when full, the least recently used
entries go first (as a shared dictionary evicts); an expired entry is never returned. Expired
entries are dropped when looked up, when evicted, and by a sweep every ``SWEEP_EVERY`` writes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

MAX_BYTES: Final = 64 * 1024 * 1024  # per dictionary and process
MAX_ENTRIES: Final = 20_000
ENTRY_OVERHEAD: Final = 256  # bytes counted per entry for the objects around the data
SWEEP_EVERY: Final = 1_000


@dataclass(frozen=True, slots=True)
class CachedResponse:
    status: int
    headers: tuple[tuple[str, str], ...]  # in order, repeated names kept
    body: bytes
    stored_at: float  # time.monotonic() seconds: ages survive wall-clock jumps
    ttl: float  # seconds it stays fresh: cache_ttl, or what Cache-Control said

    def age(self, now: float) -> float:
        return max(now - self.stored_at, 0.0)

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(name) + len(value) for name, value in self.headers)


class MemoryStore:
    __slots__ = ("_bytes", "_entries", "_writes", "max_bytes", "max_entries")

    def __init__(self, max_bytes: int = MAX_BYTES, max_entries: int = MAX_ENTRIES) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        # key -> (response, expiry (monotonic seconds, inf: until evicted), bytes counted)
        self._entries: OrderedDict[str, tuple[CachedResponse, float, int]] = OrderedDict()
        self._bytes = 0
        self._writes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def get(self, key: str, now: float) -> CachedResponse | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[1] <= now:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: str, response: CachedResponse, keep_for: float | None, now: float) -> bool:
        """Store for ``keep_for`` seconds (None: until evicted). False when the entry alone is
        larger than the store."""
        size = response.size + len(key) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return False
        self._drop(key)
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            self._sweep(now)
        while self._entries and (
            self._bytes + size > self.max_bytes or len(self._entries) >= self.max_entries
        ):
            oldest = next(iter(self._entries))
            self._drop(oldest)
        expiry = math.inf if keep_for is None else now + keep_for
        self._entries[key] = (response, expiry, size)
        self._bytes += size
        return True

    def delete(self, key: str) -> bool:
        return self._drop(key)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: str) -> bool:
        found = self._entries.pop(key, None)
        if found is None:
            return False
        self._bytes -= found[2]
        return True

    def _sweep(self, now: float) -> None:
        for key in [key for key, (_, expiry, _) in self._entries.items() if expiry <= now]:
            self._drop(key)


_stores: dict[str, MemoryStore] = {}


def named(dictionary_name: str) -> MemoryStore:
    """The store of this process for a dictionary name, made on first use."""
    store = _stores.get(dictionary_name)
    if store is None:
        store = _stores[dictionary_name] = MemoryStore()
    return store


def reset() -> None:
    """Forget every store (tests)."""
    _stores.clear()
