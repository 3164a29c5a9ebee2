"""Hybrid mode end to end: a CP, a TLS nats-server, PostgreSQL and DPs, all real processes."""

from __future__ import annotations

import urllib.error
import urllib.request

from harness.echo_upstream import EchoUpstream
from harness.hybrid import HybridCluster, http, wait_for
from harness.zonegate_node import ZonegateNode


def proxied_status(node: ZonegateNode, path: str) -> int:
    try:
        with urllib.request.urlopen(f"{node.proxy_url}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def serves(node: ZonegateNode, path: str) -> bool:
    return proxied_status(node, path) == 200


def test_a_route_created_on_the_admin_api_is_served_by_every_data_plane(
    cluster: HybridCluster, echo_upstream: EchoUpstream
) -> None:
    cp = cluster.add_control_plane()
    dp_a = cluster.add_data_plane(labels="zone:a")
    dp_b = cluster.add_data_plane(labels="zone:b")
    status, _ = cp.api("POST", "/services", {"name": "echo", "url": echo_upstream.url})
    assert status == 201
    status, _ = cp.api("POST", "/services/echo/routes", {"name": "r", "paths": ["/echo"]})
    assert status == 201
    for node in (dp_a, dp_b):
        wait_for(lambda node=node: serves(node, "/echo/x"), 15, f"{node.proxy_url} to serve /echo")
        wait_for(lambda node=node: node.status()["configuration_hash"] != "0" * 32, 5, "a hash")
    hashes = {node.status()["configuration_hash"] for node in (dp_a, dp_b)}
    assert len(hashes) == 1
    clustering = dp_a.status()["clustering"]
    assert clustering["bus_connected"] is True and clustering["sync_status"] == "normal"
    assert clustering["config_hash"] in hashes and clustering["config_version"] >= 2
    # A change reaches both as well.
    assert cp.api("DELETE", "/services/echo/routes/r")[0] == 204
    for node in (dp_a, dp_b):
        wait_for(lambda node=node: proxied_status(node, "/echo/x") == 404, 15, "the route to go")

    # The control plane knows both, with Kong's fields, in sync.
    def listed() -> list[dict[str, object]] | None:
        status, body = cp.api("GET", "/clustering/data-planes")
        assert status == 200, body
        rows = body["data"]
        serving = {node.status()["configuration_hash"] for node in (dp_a, dp_b)}
        in_sync = len(rows) == 2 and all(
            r["sync_status"] == "normal" and r["config_hash"] in serving for r in rows
        )
        return rows if in_sync else None

    rows = wait_for(listed, 15, "two data planes listed in sync")
    assert sorted(str(r["labels"]) for r in rows) == ["{'zone': 'a'}", "{'zone': 'b'}"]
    for row in rows:
        assert set(row) >= {
            "id",
            "hostname",
            "ip",
            "version",
            "last_seen",
            "updated_at",
            "ttl",
            "cert_details",
        }
        assert row["cert_details"]["expiry_timestamp"] > 0  # type: ignore[index]
        assert 0 < row["ttl"] <= 14 * 24 * 3600  # type: ignore[operator]
        assert row["config_version"] >= 3 and row["config_rejected"] is None  # type: ignore[operator]
    status, body = cp.api("GET", "/clustering/data-planes?size=1")
    assert status == 200 and len(body["data"]) == 1 and body["offset"]
    status, body = http("GET", f"{cp.admin_url}{body['next']}")
    assert status == 200 and len(body["data"]) == 1 and body["next"] is None
    status, body = cp.api("GET", "/clustering/status")
    assert status == 200 and len(body) == 2
