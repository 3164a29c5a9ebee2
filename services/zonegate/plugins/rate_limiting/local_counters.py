"""The ``local`` policy's counters: in this proxy process, one per (plugin id, identifier, period,
window start), like Kong's shared-dict counters. They live at module level, so a config reload
that keeps a plugin's id keeps its counts; windows that have ended are swept now and then. With
several proxy workers each counts on its own, as Kong's ``local`` policy does per node."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

Key = tuple[str, str, str, int]  # plugin id, identifier, period, window start

_SWEEP_EVERY: Final = 10_000

# Counts and window ends apart: a count is a plain int (no tuple allocated per request), and a
# key's end never changes (the key names its window), so it is written once.
_counts: dict[Key, int] = {}  # key -> count (at least 1)
_ends: dict[Key, float] = {}  # key -> end of its window
_writes = 0


def take(
    keys: Sequence[Key], limits: Sequence[float], ends: Sequence[float], now: float
) -> tuple[list[int], int | None]:
    """One request against every key's counter (``ends``: when each key's window ends): the
    counts before it, and the index of the first key whose limit is reached, in which case
    nothing is counted (a refused request does not count)."""
    global _writes
    counts = _counts
    used = []
    stop = None
    for index, key in enumerate(keys):  # plain loops: a comprehension costs more for a few keys
        count = counts.get(key, 0)
        used.append(count)
        if stop is None and limits[index] - count <= 0:
            stop = index
    if stop is not None:
        return used, stop
    for index, key in enumerate(keys):
        count = used[index]
        if not count:
            _ends[key] = ends[index]
        counts[key] = count + 1
    _writes += 1
    if _writes % _SWEEP_EVERY == 0:
        for key in [k for k, end in _ends.items() if end <= now]:
            del _counts[key], _ends[key]
    return used, None


def reset() -> None:
    """Forget every count (tests)."""
    _counts.clear()
    _ends.clear()
