"""How many servers of the hub's JetStream cluster hold each of the control plane's streams.

The config stream, the snapshot object store and the rate-limiting counters are created with
``cluster_js_replicas`` replicas, so in a cluster of three losing the server that held them no
longer makes config unavailable. A stream made earlier with another count is scaled in place: a
stream update that changes ``num_replicas`` only (JetStream copies the data to the new peers,
or drops peers). When the servers refuse (fewer servers than replicas, a non-clustered server,
no quorum), the stream is left as it is and a warning says so: a replica count never stops a
control plane whose streams exist. A stream created on a server that is not clustered at all gets
one replica, with a warning (waiting cannot change that); any other refusal to create is raised,
and the publisher retries until enough servers are up (a hub cluster still starting).

Region mirrors are not scaled: a region's cluster may be smaller than the hub's, so they keep one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import structlog
from nats.js.errors import APIError

log = structlog.get_logger(__name__)

T = TypeVar("T")

# JetStream's "replicas > 1 not supported in non-clustered mode".
REPLICAS_NOT_SUPPORTED: Final = 10074
# How long to wait for a new or scaled stream to have its leader and its followers caught up.
# Scaling up copies the stream to the new peers; measured around a second on loopback.
PLACEMENT_WAIT_SECONDS: Final = 5.0
_POLL_SECONDS: Final = 0.1


async def create(js: Any, make: Callable[[int], Awaitable[T]], stream: str, replicas: int) -> T:
    """``make(replicas)``: create ``stream`` (or the bucket on it) with that many replicas, or one
    on a server that is not clustered; then wait for its leader."""
    try:
        made = await make(replicas)
    except APIError as exc:
        if exc.err_code != REPLICAS_NOT_SUPPORTED or replicas == 1:
            raise
        log.warning(
            "bus.stream_replicas_unsupported",
            stream=stream,
            wanted=replicas,
            replicas=1,
            error=exc.description or repr(exc),
            hint="cluster_js_replicas is above 1 but the JetStream server is not clustered",
        )
        replicas = 1
        made = await make(1)
    await wait_until_placed(js, stream, replicas)
    return made


async def ensure_replicas(js: Any, stream: str, replicas: int) -> int:
    """Scale ``stream`` to ``replicas`` if it has another count; returns the count it has now."""
    info = await js.stream_info(stream)
    current = int(info.config.num_replicas or 1)
    if current == replicas:
        return current
    try:
        await js.update_stream(dataclasses.replace(info.config, num_replicas=replicas))
    except APIError as exc:
        log.warning(
            "bus.stream_replicas_unchanged",
            stream=stream,
            replicas=current,
            wanted=replicas,
            error=exc.description or repr(exc),
            code=exc.err_code,
        )
        return current
    log.info("bus.stream_replicas_changed", stream=stream, replicas=replicas, was=current)
    await wait_until_placed(js, stream, replicas)
    return replicas


async def wait_until_placed(js: Any, stream: str, replicas: int) -> bool:
    """True once ``stream`` has a leader and ``replicas - 1`` current followers (a stream on a
    server that is not clustered has no cluster to wait for); False, with a warning, after
    ``PLACEMENT_WAIT_SECONDS`` (writes then fail or are less safe, and are retried as usual).

    Scaling up keeps the old leader while the new peers catch up: until they have, the stream
    still lives on one server only.
    """
    deadline = time.monotonic() + PLACEMENT_WAIT_SECONDS
    while True:
        info = await js.stream_info(stream)
        cluster = info.cluster
        if cluster is None or not cluster.raft_group:  # not clustered: one copy, always led
            return True
        followers = [peer for peer in cluster.replicas or [] if peer.current]
        if cluster.leader and len(followers) >= min(replicas, int(info.config.num_replicas or 1)) - 1:
            return True
        if time.monotonic() >= deadline:
            log.warning(
                "bus.stream_not_placed",
                stream=stream,
                leader=cluster.leader,
                current_followers=len(followers),
                wanted=replicas,
                waited=PLACEMENT_WAIT_SECONDS,
            )
            return False
        await asyncio.sleep(_POLL_SECONDS)
