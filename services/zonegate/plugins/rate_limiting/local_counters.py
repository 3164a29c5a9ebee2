"""The ``local`` policy's counters: in this proxy process, per plugin instance and identifier one
count per configured period, in the period's current window, like Kong's shared-dict counters.
They live at module level, so a config reload that keeps a plugin's id and periods keeps its
counts; counters whose windows have all ended are swept now and then. With several proxy
workers each counts on its own, as Kong's ``local`` policy does per node.

One dict lookup per request finds an identifier's counts (the periods' counts side by side in a
list, each with the window start it counts in): a tuple key per period cost a hash of four
fields and two dict operations per period on every request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

_SWEEP_EVERY: Final = 10_000


class _Counts:
    """One identifier's counts under one plugin instance, a window start per count."""

    __slots__ = ("counts", "end", "starts")

    def __init__(self, starts: Sequence[int], end: float) -> None:
        self.starts = starts
        self.counts = [0] * len(starts)
        self.end = end  # when the last of its windows ends: the counts are useless after that


# (plugin id, periods) -> identifier -> counts. The periods are part of the key: a reload that
# adds or removes a period starts that plugin's counts afresh.
_tables: dict[tuple[str, tuple[str, ...]], dict[str, _Counts]] = {}
_writes = 0


def table(plugin_id: str, periods: tuple[str, ...]) -> dict[str, _Counts]:
    """The counts of one plugin instance (created on first use; kept for its successors)."""
    key = (plugin_id, periods)
    found = _tables.get(key)
    if found is None:
        found = _tables[key] = {}
    return found


def take(
    counts_by_identifier: dict[str, _Counts],
    identifier: str,
    starts: Sequence[int],
    limits: Sequence[float],
    ends: Sequence[float],
    now: float,
) -> tuple[list[int], int | None]:
    """One request against each period's counter (``starts``/``ends``: each period's current
    window): the counts before it, and the index of the first period whose limit is reached, in
    which case nothing is counted (a refused request does not count)."""
    global _writes
    entry = counts_by_identifier.get(identifier)
    if entry is None:
        entry = counts_by_identifier[identifier] = _Counts(starts, max(ends))
    elif entry.starts is not starts:  # the same windows are the same tuple object, mostly
        if entry.starts != starts:
            old = entry.starts
            counts = entry.counts
            for index, start in enumerate(starts):
                if old[index] != start:
                    counts[index] = 0  # that period's window moved on
            entry.end = max(ends)
        entry.starts = starts
    counts = entry.counts
    used = counts[:]
    for index, count in enumerate(used):
        if limits[index] - count <= 0:
            return used, index
    for index in range(len(counts)):
        counts[index] += 1
    _writes += 1
    if _writes % _SWEEP_EVERY == 0:
        _sweep(now)
    return used, None


def _sweep(now: float) -> None:
    # Tables stay, empty or not: plugin instances hold them (one small dict per plugin id seen).
    for counts_by_identifier in _tables.values():
        for identifier in [i for i, entry in counts_by_identifier.items() if entry.end <= now]:
            del counts_by_identifier[identifier]


def reset() -> None:
    """Forget every count (tests)."""
    for counts_by_identifier in _tables.values():
        counts_by_identifier.clear()
