"""What ``/metrics`` shows besides the request counts: node-level families, computed at scrape time.

Kong's: ``kong_nginx_connections_total{node_id,subsystem,state}`` and
``kong_nginx_requests_total{node_id,subsystem}`` (from the proxy's counters, summed over
workers), ``kong_node_info{node_id,version}``, ``kong_datastore_reachable`` (1: a node serving
from its config cache needs no database on the request path, as Kong reports in DB-less
mode), ``kong_upstream_target_health{upstream,target,address,state,subsystem}`` when a
prometheus instance sets ``upstream_health_metrics``, and on a hybrid data plane
``kong_control_plane_connected``. Ours, for hybrid mode: ``zonegate_data_plane_config_version``,
``zonegate_data_plane_config_hash_info{config_hash,sync_status}``,
``zonegate_data_plane_bus_connected`` and ``zonegate_data_plane_bus_reconnects_total``, plus
``zonegate_memory_workers_rss_bytes``. Pure: the caller gathers the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from zonegate.core.config import Config
from zonegate.plugins.prometheus.metrics import Gauge, Registry, merge, render

SUBSYSTEM: Final = "http"
HEALTH_STATES: Final = ("healthchecks_off", "healthy", "unhealthy", "dns_error")


def wants_upstream_health(config: Config) -> bool:
    """Kong exports target health when any prometheus instance asks for it."""
    return any(
        plugin.get("name") == "prometheus"
        and plugin.get("enabled", True)
        and (plugin.get("config") or {}).get("upstream_health_metrics")
        for plugin in config.of("plugins")
    )


def _health_gauges(upstreams: Sequence[Sequence[Any]]) -> list[Gauge]:
    gauges: list[Gauge] = []
    for name, targets in upstreams:
        for target in targets:
            addresses = (target.get("data") or {}).get("addresses") or []
            cells = [(f"{a['ip']}:{a['port']}", str(a["health"]).lower()) for a in addresses]
            if not cells:
                cells = [("", "dns_error")]
            for address, status in cells:
                for state in HEALTH_STATES:
                    gauges.append(
                        Gauge(
                            "kong_upstream_target_health",
                            "Health status of targets of upstream. States = healthchecks_off|healthy|"
                            "unhealthy|dns_error, value is 1 when state is populated.",
                            (
                                ("upstream", str(name)),
                                ("target", str(target.get("target", ""))),
                                ("address", address),
                                ("state", state),
                                ("subsystem", SUBSYSTEM),
                            ),
                            1 if state == status else 0,
                        )
                    )
    return gauges


def _hybrid_gauges(cluster: Mapping[str, Any]) -> list[Gauge]:
    connected = 1 if cluster.get("bus_connected") else 0
    return [
        Gauge(
            "kong_control_plane_connected",
            "Control plane reachable (over the bus), 0 is unreachable",
            (),
            connected,
        ),
        Gauge("zonegate_data_plane_bus_connected", "Connected to the NATS bus, 0 is not", (), connected),
        Gauge(
            "zonegate_data_plane_bus_reconnects_total",
            "Reconnections to the NATS bus since start",
            (),
            float(cluster.get("bus_reconnects") or 0),
            kind="counter",
        ),
        Gauge(
            "zonegate_data_plane_config_version",
            "Version of the control plane config this data plane serves (0: none yet)",
            (),
            float(cluster.get("config_version") or 0),
        ),
        Gauge(
            "zonegate_data_plane_config_hash_info",
            "The config hash this data plane serves and its sync status (value always 1)",
            (
                ("config_hash", str(cluster.get("config_hash") or "0" * 32)),
                ("sync_status", str(cluster.get("sync_status") or "unknown")),
            ),
            1,
        ),
    ]


def exposition(
    *,
    node_id: str,
    version: str,
    stats: Mapping[str, int],
    collected: Mapping[str, Any],
    clustering: Mapping[str, Any] | None,
) -> str:
    """``collected``: ``{"snapshots": [...], "upstream_health": [[name, targets], ...]}`` from the
    proxy processes (``ProxyHost.metrics``)."""
    node = (("node_id", node_id), ("subsystem", SUBSYSTEM))
    connections_help = "Number of connections by subsystem"
    gauges = [
        Gauge(
            "kong_nginx_connections_total",
            connections_help,
            (*node, ("state", state)),
            float(stats.get(key, 0)),
        )
        for state, key in (
            ("accepted", "connections_accepted"),
            ("handled", "connections_handled"),
            ("total", "total_requests"),
            ("active", "connections_active"),
        )
    ]
    gauges += [
        Gauge(
            "kong_nginx_requests_total",
            "Number of requests total",
            node,
            float(stats.get("total_requests", 0)),
        ),
        Gauge("kong_datastore_reachable", "Datastore reachable from Kong, 0 is unreachable", (), 1),
        Gauge(
            "kong_node_info",
            "Kong Node metadata information",
            (("node_id", node_id), ("version", version)),
            1,
        ),
        Gauge(
            "zonegate_memory_workers_rss_bytes",
            "Resident memory of the proxy processes, summed",
            (("node_id", node_id),),
            float(stats.get("workers_rss_kib", 0)) * 1024,
        ),
    ]
    gauges += _health_gauges(collected.get("upstream_health") or ())
    if clustering is not None:
        gauges += _hybrid_gauges(clustering)
    registry: Registry = merge(collected.get("snapshots") or ())
    return render(registry, gauges)
