"""The Status API (Kong's ``status_listen``): health, readiness and read-only views for operators.

``/status`` reports connections, requests, the active ``configuration_hash`` and memory, as
Kong's does (and on a hybrid data plane ``clustering``: bus connection, applied version, sync
status and the last refusal); ``/status/ready`` answers 200 only once a non-empty config is loaded (load
balancers and Kubernetes probes rely on that), and ``/upstreams/{name}/health`` shows the
balancer's view of each target. ``/metrics`` is Kong's Prometheus endpoint (see
``plugins.prometheus.exporter``): with workers, the agent asks each worker for its counts and
sums them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from zonegate import __version__
from zonegate.data_plane.proxy_host import ProxyHost
from zonegate.plugins.prometheus.exporter import exposition
from zonegate.settings import Listen

EXPOSITION_TYPE: str = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text format

NOT_READY: str = "no configuration available (empty configuration present)"


def build_app(
    get_host: Callable[[], ProxyHost | None],
    has_config: Callable[[], bool],
    node_id: str = "",
    clustering: Callable[[], dict[str, Any] | None] = lambda: None,
) -> web.Application:
    """``clustering``: a hybrid data plane's view of its bus and control plane, shown in /status."""
    app = web.Application()

    async def status(_: web.Request) -> web.Response:
        host = get_host()
        stats = await host.stats() if host is not None else {}
        body: dict[str, Any] = {
            "version": __version__,
            "server": {
                key: stats.get(key, 0)
                for key in (
                    "connections_active",
                    "connections_accepted",
                    "connections_handled",
                    "total_requests",
                )
            },
            "configuration_hash": host.config_hash if host is not None else "0" * 32,
            # With workers, the sum over worker processes (Kong reports its workers' VMs too).
            "memory": {key: stats.get(key, 0) for key in ("workers_rss_kib", "max_rss_kib")},
        }
        cluster = clustering()
        if cluster is not None:
            body["clustering"] = cluster
        return web.json_response(body)

    async def ready(_: web.Request) -> web.Response:
        host = get_host()
        if host is None or host.draining:
            return web.json_response({"message": "draining" if host is not None else NOT_READY}, status=503)
        if not has_config():
            return web.json_response({"message": NOT_READY}, status=503)
        return web.json_response({"message": "ready"})

    async def upstream_health(request: web.Request) -> web.Response:
        host = get_host()
        name = request.match_info["name"]
        balancer_health = request.query.get("balancer_health") in ("1", "true")
        data = await host.upstream_health(name, balancer_health) if host is not None else None
        if data is None:
            return web.json_response({"message": "Not found"}, status=404)
        return web.json_response({"data": data, "next": None, "node_id": node_id})

    async def metrics(_: web.Request) -> web.Response:
        host = get_host()
        text = exposition(
            node_id=node_id,
            version=__version__,
            stats=await host.stats() if host is not None else {},
            collected=await host.metrics() if host is not None else {},
            clustering=clustering(),
        )
        return web.Response(body=text.encode(), headers={"Content-Type": EXPOSITION_TYPE})

    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status/ready", ready)
    app.router.add_get("/upstreams/{name}/health", upstream_health)
    return app


async def start_status_api(app: web.Application, listeners: tuple[Listen, ...]) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for listen in listeners:
        await web.TCPSite(runner, listen.host, listen.port, reuse_address=True).start()
    return runner
