"""Cluster-wide rate-limiting counters in a JetStream KV bucket (Kong's ``cluster`` policy, over NATS).

Kong's ``cluster`` policy keeps counters in its database, so it does not work on hybrid-mode data
planes; here the counters live in the KV bucket ``Names.ratelimit_bucket``, shared by every data
plane that sees the bus.

Invariants:

- **One key per (plugin, identifier, period, window start)**; a key only grows during its window
  and then expires with its own TTL (per-message TTL, ``Nats-TTL``, nats-server 2.11+), so no
  sweeper runs and old windows go away by themselves.
- **Increments are compare-and-set**: a new value is published with
  ``Nats-Expected-Last-Subject-Sequence`` = the revision it was computed from (0: the key must not
  exist yet); a conflict re-reads the key and tries again. No increment is ever lost or doubled.
- **A request is counted only if every limit allows it** (Kong's rule: a refused request does not
  count). Each limit is checked and incremented in one compare-and-set loop; with several limits
  (say ``second`` and ``minute``), a request refused by a later one has already counted in the
  earlier ones when two data planes race at the edge of a limit (rare, and only ever over-counts).
- Since a key only grows within its window, a value this process has seen is a lower bound of the
  truth: when it is already at the limit the request is refused without a round trip.

The control plane creates the bucket (``ensure_ratelimit_bucket``, when it starts leading) in the
hub's JetStream domain, and only there: counters are global, as Kong's are in its one database. A
region's data plane counts in the hub's bucket through the leaf link (``Settings.hub_js_domain``):
it writes to ``$JS.<hub>.API.$KV.<bucket>.<key>`` (``$KV.>`` itself does not cross a leaf link
between domains) and reads with direct gets through ``$JS.<hub>.API``; with the link cut nothing
answers and ``fault_tolerant`` counts locally. A data plane needs no stream-administration right,
only those publishes and direct gets on the bucket's stream (``nats_config.data_plane_permissions``,
with the hub among a region server's ``remote_js_domains``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import structlog
from nats.js import api
from nats.js.errors import APIError, NotFoundError

from zonegate.bus import stream_replicas
from zonegate.bus.subjects import Names, in_domain

log = structlog.get_logger(__name__)

# JetStream's error code for a failed Nats-Expected-Last-Subject-Sequence check.
WRONG_LAST_SEQUENCE: Final = 10071
EXPECTED_LAST_SUBJECT_SEQUENCE: Final = "Nats-Expected-Last-Subject-Sequence"
# Keys outlive their window a little, so a clock skew between data planes never resets a count.
TTL_MARGIN_SECONDS: Final = 60
_MAX_ATTEMPTS: Final = 16
_CACHE_LIMIT: Final = 50_000


async def ensure_ratelimit_bucket(js: Any, names: Names, *, replicas: int = 1) -> None:
    """Create the counters' bucket if it is missing, else scale it to ``replicas``: a KV stream
    (``KV_<bucket>``, one value per key, direct gets) that accepts per-message TTLs. Made as a
    stream, not with ``create_key_value``, which would add subject delete markers that keys would
    then trip on."""
    config = api.StreamConfig(
        name=names.ratelimit_stream,
        subjects=[names.ratelimit_wildcard],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        max_msgs_per_subject=1,
        discard=api.DiscardPolicy.OLD,
        num_replicas=replicas,
        allow_direct=True,
        allow_rollup_hdrs=True,
        deny_delete=True,
        allow_msg_ttl=True,
        description="Zonegate rate-limiting counters (cluster policy)",
    )
    try:
        await js.stream_info(names.ratelimit_stream)
    except NotFoundError:
        await stream_replicas.create(
            js,
            lambda count: js.add_stream(replace(config, num_replicas=count)),
            names.ratelimit_stream,
            replicas,
        )
        log.info("bus.ratelimit_bucket_created", stream=names.ratelimit_stream)
        return
    await stream_replicas.ensure_replicas(js, names.ratelimit_stream, replicas)


@dataclass(frozen=True, slots=True)
class Counter:
    """One limit to check and count: ``key`` is dot-separated tokens, unique per window."""

    key: str
    limit: float
    ttl: int  # seconds the key must live: what is left of its window, or more


@dataclass(frozen=True, slots=True)
class Taken:
    usage: tuple[int, ...]  # each counter's value before this request, in the order given
    stop: int | None  # the index of the counter that refused the request, if one did


class ClusterCounters:
    """Counters on the bus for one process; ``js`` is a JetStream context (``BusConnection``) of
    the domain holding the bucket. ``remote_domain``: that domain when it is not the one of the
    server this process is connected to (a region's data plane counting in the hub's bucket):
    writes then go through its API prefix (``subjects.in_domain``)."""

    def __init__(self, names: Names, *, remote_domain: str | None = None) -> None:
        self.names = names
        self.remote_domain = remote_domain
        self._seen: dict[str, tuple[int, int]] = {}  # subject -> (value, revision) last seen

    async def take(self, js: Any, counters: Sequence[Counter], *, ack_wait: float) -> Taken:
        """Count one request against every counter unless one of them is at its limit."""
        if len(self._seen) > _CACHE_LIMIT:
            self._seen.clear()  # windows roll over; a lost hint only costs a read
        subjects = [self.names.ratelimit_subject(c.key) for c in counters]
        for index, (subject, counter) in enumerate(zip(subjects, counters, strict=True)):
            seen = self._seen.get(subject)
            if seen is not None and seen[0] >= counter.limit:
                return Taken(tuple(self._value(s) for s in subjects), index)
        usage: list[int] = []
        for index, (subject, counter) in enumerate(zip(subjects, counters, strict=True)):
            before = await self._increment(js, subject, counter, ack_wait)
            if before is None:
                usage.append(self._value(subject))
                usage += [self._value(s) for s in subjects[index + 1 :]]
                return Taken(tuple(usage), index)
            usage.append(before)
        return Taken(tuple(usage), None)

    def _value(self, subject: str) -> int:
        seen = self._seen.get(subject)
        return 0 if seen is None else seen[0]

    async def _increment(self, js: Any, subject: str, counter: Counter, ack_wait: float) -> int | None:
        """The value before the increment, or None when the counter is at its limit."""
        value, revision = self._seen.get(subject, (0, 0))
        for _ in range(_MAX_ATTEMPTS):
            if value >= counter.limit:
                return None
            try:
                ack = await js.publish(
                    in_domain(subject, self.remote_domain),
                    str(value + 1).encode(),
                    timeout=ack_wait,
                    headers={EXPECTED_LAST_SUBJECT_SEQUENCE: str(revision)},
                    msg_ttl=counter.ttl,
                )
            except APIError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
                value, revision = await self._read(js, subject)
                continue
            self._seen[subject] = (value + 1, int(ack.seq))
            return value
        raise RuntimeError(f"rate-limit counter {subject}: too much contention")

    async def _read(self, js: Any, subject: str) -> tuple[int, int]:
        try:
            message = await js.get_last_msg(self.names.ratelimit_stream, subject, direct=True)
        except NotFoundError:
            self._seen.pop(subject, None)
            return 0, 0
        value = int(bytes(message.data or b"0"))
        self._seen[subject] = (value, int(message.seq))
        return value, int(message.seq)
