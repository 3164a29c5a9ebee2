"""Worker processes: shared ports, config through LMDB, reload, a killed worker replaced, clean stop."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from typing import Any

from harness.echo_upstream import EchoUpstream
from harness.zonegate_node import ZonegateNode
from zonegate.data_plane.lmdb_cache import ConfigCache


def get(node: ZonegateNode, path: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body.startswith(b"{") else {}
    finally:
        conn.close()


def worker_pids(node: ZonegateNode) -> list[int]:
    assert node.process is not None
    result = subprocess.run(
        ["pgrep", "-P", str(node.process.pid)], capture_output=True, text=True, check=False
    )
    return sorted(int(pid) for pid in result.stdout.split())


def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_workers_share_the_port_and_follow_the_agent(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    document = {
        "_format_version": "3.0",
        "services": [{"name": "svc", "url": echo_upstream.url, "routes": [{"paths": ["/one"]}]}],
    }
    node: ZonegateNode = zonegate_node_factory(document, {"ZONEGATE_WORKERS": "2"})
    wait_until(lambda: get(node, "/one")[0] == 200)
    pids = worker_pids(node)
    assert len(pids) == 2

    for _ in range(40):
        assert get(node, "/one")[0] == 200
    status = node.status()
    assert status["server"]["total_requests"] >= 40
    assert status["memory"]["workers_rss_kib"] > 0

    # The agent wrote the active config to LMDB; the workers read it from there.
    cache = ConfigCache(node.prefix / "dbless.lmdb")
    try:
        cached = cache.read()
    finally:
        cache.close()
    assert cached is not None
    assert cached.config_hash == status["configuration_hash"]

    # Reload reaches every worker: after it, no connection ever sees the old config.
    old_hash = status["configuration_hash"]
    document["services"][0]["routes"].append({"paths": ["/two"]})
    node.write_config(document)
    node.reload()
    node.wait_for_hash_change(old_hash)
    assert all(get(node, "/two")[0] == 200 for _ in range(20))

    # A worker that dies is replaced, and the replacement serves the current config.
    os.kill(pids[0], signal.SIGKILL)
    wait_until(lambda: len(worker_pids(node)) == 2 and pids[0] not in worker_pids(node))
    assert all(get(node, "/two")[0] == 200 for _ in range(20))

    # SIGTERM: the agent drains the workers and nothing is left behind.
    survivors = worker_pids(node)
    assert node.stop() == 0
    for pid in survivors:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"worker {pid} still running")


def test_start_from_the_lmdb_cache_without_a_file(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    document = {
        "_format_version": "3.0",
        "services": [{"name": "svc", "url": echo_upstream.url, "routes": [{"paths": ["/cached"]}]}],
    }
    first: ZonegateNode = zonegate_node_factory(document)
    assert get(first, "/cached")[0] == 200
    first.stop()
    # Same prefix, no declarative file: the node boots from the cache the first run left.
    first.env["ZONEGATE_DECLARATIVE_CONFIG"] = ""
    first.start()
    assert get(first, "/cached")[0] == 200
