"""rate-limiting's handler: Kong 3.x's identifiers, fixed windows, headers and 429.

``local`` counts in this process (``local_counters``). ``cluster`` counts in a JetStream KV bucket
that every data plane shares (``zonegate.bus.ratelimit_store``), in the hub's JetStream domain
(``Settings.hub_js_domain``) whatever region the data plane is in, through a bus connection of this
proxy process opened in ``init_worker`` (data planes only). Each request waits at most
``CLUSTER_TIMEOUT`` for the bus; when it cannot be reached, ``fault_tolerant`` counts locally and
proxies (one warning per outage), else the request gets Kong's 500.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from zonegate import __version__
from zonegate.bus.connection import BusConnection, node_options
from zonegate.bus.ratelimit_store import TTL_MARGIN_SECONDS, ClusterCounters, Counter
from zonegate.bus.subjects import Names
from zonegate.bus.tls import client_tls
from zonegate.plugins.api import AccessResult, Exit, Plugin, PluginContext, SharedIndexes
from zonegate.plugins.rate_limiting import local_counters
from zonegate.plugins.rate_limiting.schema import PERIODS
from zonegate.plugins.rate_limiting.windows import LENGTH, seconds_left, window_end, window_start
from zonegate.settings import Settings

log = structlog.get_logger(__name__)

CLUSTER_TIMEOUT: Final = 0.1  # seconds a request may wait for the shared counters
UNEXPECTED: Final = "An unexpected error occurred"
X_LIMIT: Final = {p: f"X-RateLimit-Limit-{p.capitalize()}" for p in PERIODS}
X_REMAINING: Final = {p: f"X-RateLimit-Remaining-{p.capitalize()}" for p in PERIODS}


@dataclass(slots=True)
class _Cluster:
    """This process's way to the shared counters."""

    connection: BusConnection
    counters: ClusterCounters
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    degraded: bool = False  # an outage was logged; cleared when the bus answers again


_cluster: _Cluster | None = None


def identify(config: Mapping[str, Any], ctx: PluginContext) -> str:
    """Kong's ``get_identifier``: what ``limit_by`` names, else the client IP."""
    by = config["limit_by"]
    value: Any = None
    if by == "consumer":
        value = (ctx.consumer or ctx.credential or {}).get("id")
    elif by == "credential":
        value = (ctx.credential or {}).get("id")
    elif by == "service":
        value = (ctx.service or {}).get("id")
    elif by == "header":
        value = ctx.header(config["header_name"])
    elif by == "path" and ctx.path == config["path"]:
        value = ctx.path
    return str(value) if value else ctx.client_ip


def _number(value: float) -> str:
    if type(value) is int:  # counts and limits nearly always are
        return str(value)
    return str(int(value)) if float(value).is_integer() else str(value)


def _token(identifier: str) -> str:
    return hashlib.blake2b(identifier.encode(), digest_size=16).hexdigest()


class RateLimiting(Plugin):
    NAME = "rate-limiting"
    PRIORITY = 910
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        config = self.config
        self.limits: tuple[tuple[str, float], ...] = tuple(
            (period, config[period]) for period in PERIODS if config.get(period) is not None
        )
        self.cluster = config["policy"] == "cluster"
        self.hide_headers: bool = config["hide_client_headers"]
        # What the headers of each limit need that does not change per request: its limit, its
        # window's length, the X-RateLimit-Limit-<period> header, the name of the remaining one,
        # and the RateLimit-Limit header when it is the tightest; all encoded as sent, and the
        # lowered names of everything set (with and without Retry-After).
        self.limit_values = tuple(limit for _, limit in self.limits)
        self.local_counts = local_counters.table(self.id, tuple(period for period, _ in self.limits))
        self.header_plan: tuple[tuple[float, int, tuple[bytes, bytes], bytes, tuple[bytes, bytes]], ...] = (
            tuple(
                (
                    limit,
                    LENGTH[period],
                    (X_LIMIT[period].encode(), _number(limit).encode()),
                    X_REMAINING[period].encode(),
                    (b"RateLimit-Limit", _number(limit).encode()),
                )
                for period, limit in self.limits
            )
        )
        names = [
            name.lower()
            for _, _, (limit_name, _), remaining, _ in self.header_plan
            for name in (limit_name, remaining)
        ]
        names += [b"ratelimit-limit", b"ratelimit-remaining", b"ratelimit-reset"]
        self.header_names = tuple(names)
        self.refusal_header_names = (*names, b"retry-after")
        # The windows move at most once a second: the last second's starts and ends are kept.
        self.second = -1
        self.starts: tuple[int, ...] = ()
        self.ends: tuple[int, ...] = ()

    @classmethod
    def init_worker(cls, settings: Settings) -> None:
        global _cluster
        if _cluster is not None or not settings.is_data_plane or settings.cluster_cert is None:
            return
        try:
            loop = asyncio.get_running_loop()
            tls = client_tls(settings)
        except Exception as exc:  # no bus: the cluster policy falls back as when NATS is down
            log.warning("rate_limiting.no_bus", error=repr(exc))
            return
        options = node_options(settings, tls, role="dp-ratelimit", node_id=str(os.getpid()))
        # The counters live in the hub's domain, shared by every region: a region's data plane
        # reads its config in its own domain and counts in the hub's, through the leaf link.
        hub = settings.hub_js_domain
        remote = hub if hub != settings.cluster_js_domain else None
        counters = ClusterCounters(Names(settings.cluster_name), remote_domain=remote)
        _cluster = _Cluster(BusConnection(dataclasses.replace(options, js_domain=hub)), counters)
        task = loop.create_task(_cluster.connection.start(), name="rate-limiting-bus")
        _cluster.tasks.add(task)
        task.add_done_callback(_cluster.tasks.discard)

    def access(self, ctx: PluginContext) -> AccessResult:
        now = time.time()
        identifier = identify(self.config, ctx)
        starts = self._window_starts(now)
        if self.cluster:
            return self._cluster_access(ctx, identifier, starts, now)
        return self._local(ctx, identifier, starts, now)

    def _window_starts(self, now: float) -> tuple[int, ...]:
        """Each limit's current window start (``window_start`` depends on the whole second only)."""
        second = int(now)
        if second != self.second:
            self.starts = tuple(window_start(period, now) for period, _ in self.limits)
            self.ends = tuple(
                window_end(period, start) for (period, _), start in zip(self.limits, self.starts, strict=True)
            )
            self.second = second
        return self.starts

    def _local(self, ctx: PluginContext, identifier: str, starts: Sequence[int], now: float) -> Exit | None:
        if starts is self.starts:
            ends: Sequence[int] = self.ends
        else:  # the cluster policy's fallback, after the windows moved on while it waited
            ends = [window_end(period, start) for (period, _), start in zip(self.limits, starts, strict=True)]
        used, stop = local_counters.take(self.local_counts, identifier, starts, self.limit_values, ends, now)
        return self._answer(ctx, used, stop, starts, now)

    async def _cluster_access(
        self, ctx: PluginContext, identifier: str, starts: Sequence[int], now: float
    ) -> Exit | None:
        cluster = _cluster
        if cluster is None or not cluster.connection.is_connected:
            return self._fallback(ctx, identifier, starts, now, "the bus is not connected")
        token = _token(identifier)
        counters = [
            Counter(
                key=f"{self.id}.{period}.{start}.{token}",
                limit=limit,
                ttl=LENGTH[period] + LENGTH[period] // 10 + TTL_MARGIN_SECONDS,
            )
            for (period, limit), start in zip(self.limits, starts, strict=True)
        ]
        try:
            async with asyncio.timeout(CLUSTER_TIMEOUT):
                taken = await cluster.counters.take(
                    cluster.connection.jetstream(), counters, ack_wait=CLUSTER_TIMEOUT
                )
        except Exception as exc:  # TimeoutError, a lost connection, a missing bucket...
            return self._fallback(ctx, identifier, starts, now, repr(exc))
        if cluster.degraded:
            cluster.degraded = False
            log.info("rate_limiting.cluster_counters_back")
        return self._answer(ctx, taken.usage, taken.stop, starts, now)

    def _fallback(
        self, ctx: PluginContext, identifier: str, starts: Sequence[int], now: float, error: str
    ) -> Exit | None:
        if not self.config["fault_tolerant"]:
            log.error("rate_limiting.cluster_counters_failed", plugin=self.id, error=error)
            return Exit(500, UNEXPECTED)
        cluster = _cluster
        if cluster is None or not cluster.degraded:
            log.warning("rate_limiting.counting_locally", plugin=self.id, error=error)
            if cluster is not None:
                cluster.degraded = True
        return self._local(ctx, identifier, starts, now)

    def _answer(
        self, ctx: PluginContext, used: Sequence[int], stop: int | None, starts: Sequence[int], now: float
    ) -> Exit | None:
        """Kong's headers (the tightest limit in ``RateLimit-*``) and the refusal."""
        refusal = None
        if stop is not None:
            config = self.config
            refusal = Exit(int(config["error_code"]), config["error_message"])
        if self.hide_headers:
            return refusal
        headers: list[tuple[bytes, bytes]] = []
        plan = self.header_plan
        best = -1  # the tightest limit: least remaining, then the longest window
        best_remaining = 0.0
        best_window = 0
        best_text = b""
        for index, (limit, window, limit_header, remaining_name, _) in enumerate(plan):
            remaining = limit - used[index]
            if stop is None or stop == index:
                remaining -= 1
            if remaining <= 0:
                remaining = 0.0  # max(0, remaining), without the call
            remaining_text = _number(remaining).encode()
            headers.append(limit_header)
            headers.append((remaining_name, remaining_text))
            if (
                best < 0
                or remaining < best_remaining
                or (remaining == best_remaining and window > best_window)
            ):
                best, best_remaining, best_window, best_text = index, remaining, window, remaining_text
        # The schema requires at least one limit, so there is a best.
        reset = str(seconds_left(self.limits[best][0], starts[best], now)).encode()
        headers.append(plan[best][4])
        headers.append((b"RateLimit-Remaining", best_text))
        headers.append((b"RateLimit-Reset", reset))
        if refusal is None:
            ctx.set_encoded_response_headers(headers, self.header_names)
            return None
        headers.append((b"Retry-After", reset))
        ctx.set_encoded_response_headers(headers, self.refusal_header_names)
        return refusal
