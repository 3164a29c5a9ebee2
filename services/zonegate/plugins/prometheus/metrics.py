"""The metric families (Kong's names, labels and buckets), one process's counters, and the text format.

Each proxy process counts for itself in ``REGISTRY`` (the log phase adds to a dict: no lock, no
I/O). ``snapshot()`` turns the counts into plain JSON-able lists, so the agent process can ask
each worker for its own over the control channel and ``merge`` them: counters and histogram
buckets add up. ``render`` writes the Prometheus text exposition format (version 0.0.4), one
``# HELP``/``# TYPE`` pair per family, histogram buckets cumulative with Kong's ``le`` spelling
(``%07.1f``, so dashboards that match ``le="00100.0"`` keep working).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

# Kong 3.x's buckets (kong/plugins/prometheus/exporter.lua), in milliseconds.
KONG_LATENCY_BUCKETS: Final = (1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000)
UPSTREAM_LATENCY_BUCKETS: Final = (25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000)

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


def _families(*items: Family) -> dict[str, Family]:
    return {item.name: item for item in items}


FAMILIES: Final = _families(
    Family(
        "kong_http_requests_total",
        "counter",
        "HTTP status codes per consumer/service/route in Kong",
        ("service", "route", "code", "source", "workspace", "consumer"),
    ),
    Family(
        "kong_kong_latency_ms",
        "histogram",
        "Latency added by Kong and enabled plugins for each service/route in Kong",
        ("service", "route", "workspace"),
        KONG_LATENCY_BUCKETS,
    ),
    Family(
        "kong_upstream_latency_ms",
        "histogram",
        "Latency added by upstream response for each service/route in Kong",
        ("service", "route", "workspace"),
        UPSTREAM_LATENCY_BUCKETS,
    ),
    Family(
        "kong_request_latency_ms",
        "histogram",
        "Total latency incurred during requests for each service/route in Kong",
        ("service", "route", "workspace"),
        UPSTREAM_LATENCY_BUCKETS,
    ),
    Family(
        "kong_bandwidth_bytes",
        "counter",
        "Total bandwidth (ingress/egress) throughput in bytes",
        ("service", "route", "direction", "workspace", "consumer"),
    ),
)

Key = tuple[str, tuple[str, ...]]


class Registry:
    """One process's counts. Histogram cells hold per-bucket counts (the last one is +Inf),
    then the sum."""

    def __init__(self) -> None:
        self.counters: dict[Key, float] = {}
        self.histograms: dict[Key, list[float]] = {}

    def inc(self, name: str, labels: tuple[str, ...], amount: float = 1) -> None:
        key = (name, labels)
        self.counters[key] = self.counters.get(key, 0) + amount

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        key = (name, labels)
        buckets = FAMILIES[name].buckets
        cell = self.histograms.get(key)
        if cell is None:
            cell = self.histograms[key] = [0.0] * (len(buckets) + 2)
        cell[bisect.bisect_left(buckets, value)] += 1
        cell[-1] += value

    def snapshot(self) -> dict[str, list[list[Any]]]:
        return {
            "counters": [[name, list(labels), value] for (name, labels), value in self.counters.items()],
            "histograms": [
                [name, list(labels), list(cell)] for (name, labels), cell in self.histograms.items()
            ],
        }

    def clear(self) -> None:
        self.counters.clear()
        self.histograms.clear()


REGISTRY: Final = Registry()


def merge(snapshots: Iterable[Mapping[str, Any]]) -> Registry:
    """The sum of several processes' snapshots."""
    total = Registry()
    for snapshot in snapshots:
        for name, labels, value in snapshot.get("counters", ()):
            total.inc(name, tuple(labels), value)
        for name, labels, cell in snapshot.get("histograms", ()):
            key = (name, tuple(labels))
            mine = total.histograms.get(key)
            if mine is None:
                total.histograms[key] = list(cell)
            else:
                for i, value in enumerate(cell):
                    mine[i] += value
    return total


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True)) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True, slots=True)
class Gauge:
    """A node-level sample computed at scrape time."""

    name: str
    help: str
    labels: tuple[tuple[str, str], ...]
    value: float
    kind: Kind = "gauge"


def render(registry: Registry, gauges: Sequence[Gauge] = ()) -> str:
    lines: list[str] = []
    names: Sequence[str]
    seen: set[str] = set()
    for gauge in gauges:
        if gauge.name not in seen:
            seen.add(gauge.name)
            lines += [f"# HELP {gauge.name} {gauge.help}", f"# TYPE {gauge.name} {gauge.kind}"]
        names = [n for n, _ in gauge.labels]
        lines.append(f"{gauge.name}{_labels(names, [v for _, v in gauge.labels])} {_number(gauge.value)}")
    counters: dict[str, list[tuple[tuple[str, ...], float]]] = {}
    for (name, labels), value in sorted(registry.counters.items()):
        counters.setdefault(name, []).append((labels, value))
    histograms: dict[str, list[tuple[tuple[str, ...], list[float]]]] = {}
    for (name, labels), cell in sorted(registry.histograms.items()):
        histograms.setdefault(name, []).append((labels, cell))
    for family in FAMILIES.values():
        series_c = counters.get(family.name)
        series_h = histograms.get(family.name)
        if not series_c and not series_h:
            continue
        lines += [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} {family.kind}"]
        for labels, value in series_c or ():
            lines.append(f"{family.name}{_labels(family.labels, labels)} {_number(value)}")
        for labels, cell in series_h or ():
            running = 0.0
            names = (*family.labels, "le")
            for bound, count in zip((*family.buckets, None), cell[:-1], strict=True):
                running += count
                le = "+Inf" if bound is None else f"{bound:07.1f}"
                lines.append(f"{family.name}_bucket{_labels(names, (*labels, le))} {_number(running)}")
            lines.append(f"{family.name}_count{_labels(family.labels, labels)} {_number(running)}")
            lines.append(f"{family.name}_sum{_labels(family.labels, labels)} {_number(cell[-1])}")
    return "\n".join(lines) + "\n"
