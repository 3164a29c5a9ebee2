"""The ``local`` policy's counters: in this proxy process, one per (plugin id, identifier, period,
window start), like Kong's shared-dict counters. They live at module level, so a config reload
that keeps a plugin's id keeps its counts; windows that have ended are swept now and then. With
several proxy workers each counts on its own, as Kong's ``local`` policy does per node."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

Key = tuple[str, str, str, int]  # plugin id, identifier, period, window start

_SWEEP_EVERY: Final = 10_000

_counts: dict[Key, tuple[int, float]] = {}  # key -> (count, end of its window)
_writes = 0


def usage(keys: Sequence[Key]) -> list[int]:
    return [_counts.get(key, (0, 0.0))[0] for key in keys]


def increment(keys: Sequence[Key], ends: Sequence[float], now: float) -> None:
    global _writes
    for key, end in zip(keys, ends, strict=True):
        count = _counts.get(key, (0, end))[0]
        _counts[key] = (count + 1, end)
    _writes += 1
    if _writes % _SWEEP_EVERY == 0:
        for key in [k for k, (_, end) in _counts.items() if end <= now]:
            del _counts[key]


def reset() -> None:
    """Forget every count (tests)."""
    _counts.clear()
