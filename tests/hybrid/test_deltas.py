"""Delta snapshots end to end: small changes reach data planes as signed deltas in the
announcement; a data plane that is behind reads the full snapshot; the cache replays deltas."""

from __future__ import annotations

import json
from typing import Any

from harness.echo_upstream import EchoUpstream
from harness.hybrid import HybridCluster, wait_for
from harness.zonegate_node import ZonegateNode

from .test_hybrid_e2e import proxied_status


def applied(node: ZonegateNode) -> list[dict[str, Any]]:
    """The node's config_agent.applied log events (the log is JSON lines in the harness)."""
    events = []
    for line in node.read_log().splitlines():
        if "config_agent.applied" not in line:
            continue
        try:
            events.append(json.loads(line))
        except ValueError:  # console format: key=value pairs
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            events.append({key: value.strip("'\"") for key, value in fields.items()})
    return events


def delta_flags(node: ZonegateNode) -> list[bool]:
    return [str(event.get("delta")) in ("True", "true") for event in applied(node)]


def hash_of(node: ZonegateNode) -> str:
    return str(node.status()["configuration_hash"])


def test_small_changes_travel_as_deltas_and_match_the_full_snapshots(
    cluster: HybridCluster, echo_upstream: EchoUpstream
) -> None:
    cp = cluster.add_control_plane()
    dp = cluster.add_data_plane()
    assert cp.api("POST", "/services", {"name": "echo", "url": echo_upstream.url})[0] == 201
    assert cp.api("POST", "/services/echo/routes", {"name": "r0", "paths": ["/r0"]})[0] == 201
    wait_for(lambda: proxied_status(dp, "/r0") == 200, 15, "the first route")

    changes: list[tuple[str, str, dict[str, Any] | None, str, int]] = [
        ("POST", "/services/echo/routes", {"name": "r1", "paths": ["/r1"]}, "/r1", 200),
        ("PATCH", "/routes/r0", {"paths": ["/moved"]}, "/moved", 200),
        ("DELETE", "/routes/r1", None, "/r1", 404),
        ("POST", "/consumers", {"username": "alice"}, "/moved", 200),
        ("POST", "/services/echo/plugins", {"name": "key-auth"}, "/moved", 401),
        ("DELETE", "/consumers/alice", None, "/moved", 401),
    ]
    for method, path, body, probe, expected in changes:
        status, answer = cp.api(method, path, body)
        assert status in (200, 201, 204), answer
        wait_for(lambda p=probe, e=expected: proxied_status(dp, p) == e, 15, f"{method} {path} served")

    latest = cp.api("GET", "/status")[1]["config_version"]
    wait_for(lambda: dp.status()["clustering"]["config_version"] == latest, 15, "the last change")
    flags = delta_flags(dp)
    # The first snapshot has no base to start from; every later one (changes close together may
    # share one) came as a delta.
    assert flags[0] is False and len(flags) >= 4, flags
    assert flags[1:] == [True] * (len(flags) - 1), flags

    # What the deltas built is what the full snapshot says: a new data plane reads the stream.
    fresh = cluster.add_data_plane()
    wait_for(lambda: hash_of(fresh) == hash_of(dp), 15, "the fresh data plane to catch up")
    assert delta_flags(fresh) == [False]
    wait_for(
        lambda: all(
            r["sync_status"] == "normal" for r in cp.api("GET", "/clustering/data-planes")[1]["data"]
        ),
        15,
        "both data planes in sync",
    )

    # The cache replays the deltas: with the control plane gone, a restart serves the last change.
    cp.stop()
    served = hash_of(dp)
    dp.stop()
    dp.start()
    assert hash_of(dp) == served
    assert proxied_status(dp, "/moved") == 401


def test_a_data_plane_that_missed_a_change_reads_the_full_snapshot(
    cluster: HybridCluster, echo_upstream: EchoUpstream
) -> None:
    cp = cluster.add_control_plane()
    dp = cluster.add_data_plane()
    assert cp.api("POST", "/services", {"name": "echo", "url": echo_upstream.url})[0] == 201
    assert cp.api("POST", "/services/echo/routes", {"name": "a", "paths": ["/a"]})[0] == 201
    wait_for(lambda: proxied_status(dp, "/a") == 200, 15, "the first route")
    dp.stop()
    # Two changes while it is away: the next delta's base is not what it serves.
    assert cp.api("POST", "/services/echo/routes", {"name": "b", "paths": ["/b"]})[0] == 201
    assert cp.api("POST", "/services/echo/routes", {"name": "c", "paths": ["/c"]})[0] == 201
    dp.start()
    wait_for(lambda: proxied_status(dp, "/c") == 200, 15, "the missed changes")
    assert cp.api("DELETE", "/routes/a")[0] == 204
    wait_for(lambda: proxied_status(dp, "/a") == 404, 15, "the next change")
    assert delta_flags(dp)[-1] is True  # back on deltas once it serves the base again
