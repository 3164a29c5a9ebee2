"""A data plane with worker processes follows delta changes through its LMDB cache: every worker
reads only the deltas appended since its last reload, and every worker serves each change."""

from __future__ import annotations

import http.client
import json
import subprocess
from typing import Any

from harness.echo_upstream import EchoUpstream
from harness.hybrid import ControlPlaneProcess, HybridCluster, wait_for
from harness.zonegate_node import ZonegateNode
from zonegate.core.canonical import config_hash
from zonegate.data_plane.lmdb_cache import ConfigCache

REQUESTS = 24  # new connections per check: SO_REUSEPORT spreads connections, not requests


def worker_pids(node: ZonegateNode) -> set[int]:
    assert node.process is not None
    found = subprocess.run(
        ["pgrep", "-P", str(node.process.pid)], capture_output=True, text=True, check=False
    )
    return {int(pid) for pid in found.stdout.split()}


def answers(node: ZonegateNode, path: str) -> dict[str, set[int]]:
    """The statuses each worker answered, over new connections. A worker is told by its request
    id's prefix: random per proxy server, so per worker process."""
    seen: dict[str, set[int]] = {}
    for _ in range(REQUESTS):
        conn = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=5)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
            request_id = response.getheader("X-Zonegate-Request-Id") or ""
            seen.setdefault(request_id[:16], set()).add(response.status)
        finally:
            conn.close()
    return seen


def served_by_both_workers(node: ZonegateNode, path: str, expected: int) -> bool:
    seen = answers(node, path)
    return len(seen) == 2 and "" not in seen and all(statuses == {expected} for statuses in seen.values())


def reloads(node: ZonegateNode) -> list[dict[str, Any]]:
    """The workers' worker.reloaded events (they log to the node's log, as JSON here)."""
    events = []
    for line in node.read_log().splitlines():
        if '"worker.reloaded"' not in line:
            continue
        try:
            events.append(json.loads(line))
        except ValueError:  # a line two processes wrote into each other: not ours to judge
            continue
    return events


def signed_hash(cp: ControlPlaneProcess, dp: ZonegateNode) -> str | None:
    """The hash the control plane signed for its latest version, once the data plane's agent has
    verified and applied that version (the control plane's own /status reports the hash of its
    export, without timestamps: another value by design)."""
    latest = cp.api("GET", "/status")[1]["config_version"]
    clustering = dp.status()["clustering"]
    return str(clustering["config_hash"]) if clustering["config_version"] == latest else None


def test_workers_follow_a_chain_of_delta_changes_incrementally(
    cluster: HybridCluster, echo_upstream: EchoUpstream
) -> None:
    cp = cluster.add_control_plane()
    dp = cluster.add_data_plane(workers="2", log_format="json")
    assert cp.api("POST", "/services", {"name": "echo", "url": echo_upstream.url})[0] == 201
    assert cp.api("POST", "/services/echo/routes", {"name": "r0", "paths": ["/r0"]})[0] == 201
    wait_for(lambda: served_by_both_workers(dp, "/r0", 200), 20, "both workers to serve /r0")
    wait_for(lambda: signed_hash(cp, dp) == dp.status()["configuration_hash"], 15, "the first config")
    pids = worker_pids(dp)
    assert len(pids) == 2
    before = len(reloads(dp))

    changes: list[tuple[str, str, dict[str, Any] | None, str, int]] = [
        ("POST", "/services/echo/routes", {"name": "r1", "paths": ["/r1"]}, "/r1", 200),
        ("PATCH", "/routes/r0", {"paths": ["/moved"]}, "/moved", 200),
        ("DELETE", "/routes/r1", None, "/r1", 404),
        ("POST", "/services/echo/plugins", {"name": "key-auth"}, "/moved", 401),
    ]
    served = ""
    for method, path, body, probe, expected in changes:
        status, answer = cp.api(method, path, body)
        assert status in (200, 201, 204), answer
        what = f"{method} {path} served by both workers"
        wait_for(lambda p=probe, e=expected: served_by_both_workers(dp, p, e), 20, what)
        served = wait_for(lambda: signed_hash(cp, dp), 15, f"{method} {path}: the latest version")
        wait_for(lambda h=served: dp.status()["configuration_hash"] == h, 15, f"{method} {path}: hash")

        # Each worker's last reload brought it to the control plane's config, by deltas. (A
        # worker logs it just after swapping the config in: it may serve before the line is out.)
        def latest_reloads(h: str = served) -> dict[int, dict[str, Any]] | None:
            found = {event["pid"]: event for event in reloads(dp)[before:]}
            done = set(found) == pids and all(event["config_hash"] == h for event in found.values())
            return found if done else None

        latest = wait_for(latest_reloads, 15, f"{method} {path}: both workers' reload lines")
        for event in latest.values():
            assert event["config_hash"] == served, event
            assert event["whole"] is False and event["deltas"] >= 1, event

    assert served_by_both_workers(dp, "/r0", 404)  # the route moved, everywhere
    followed = reloads(dp)[before:]
    assert followed and all(event["whole"] is False for event in followed), followed
    assert {event["pid"] for event in followed} == pids  # the same two workers, never restarted

    # What the workers were told they serve is what the config holds: the cache they followed,
    # hashed from its contents, and a fresh data plane that reads the full snapshot agree.
    cache = ConfigCache(dp.prefix / "dbless.lmdb", owner=False)
    try:
        cached = cache.read()
    finally:
        cache.close()
    assert cached is not None and cached.deltas >= len(changes)
    assert config_hash(cached.config).config_hash == served
    fresh = cluster.add_data_plane()
    wait_for(lambda: fresh.status()["configuration_hash"] == served, 15, "a fresh data plane")
