"""The Status API (Kong's ``status_listen``): health, readiness and read-only views for operators.

``/status`` reports connections, requests, the active ``configuration_hash`` and memory, as
Kong's does; ``/status/ready`` answers 200 only once a non-empty config is loaded (load
balancers and Kubernetes probes rely on that), and ``/upstreams/{name}/health`` shows the
balancer's view of each target.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Any

from aiohttp import web

from zonegate import __version__
from zonegate.data_plane.server import ProxyServer
from zonegate.settings import Listen

NOT_READY: str = "no configuration available (empty configuration present)"


def _memory() -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss_kib = 0
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        rss_kib = pages * resource.getpagesize() // 1024
    except OSError:
        pass
    return {"workers_rss_kib": rss_kib, "max_rss_kib": usage.ru_maxrss}


def build_app(
    get_server: Callable[[], ProxyServer | None], has_config: Callable[[], bool], node_id: str = ""
) -> web.Application:
    app = web.Application()

    async def status(_: web.Request) -> web.Response:
        server = get_server()
        counters = server.counters if server is not None else None
        body: dict[str, Any] = {
            "version": __version__,
            "server": {
                "connections_active": counters.active if counters else 0,
                "connections_accepted": counters.accepted if counters else 0,
                "connections_handled": counters.handled if counters else 0,
                "total_requests": counters.total_requests if counters else 0,
            },
            "configuration_hash": server.runtime.config_hash if server is not None else "0" * 32,
            "memory": _memory(),
        }
        return web.json_response(body)

    async def ready(_: web.Request) -> web.Response:
        server = get_server()
        if server is None or not has_config() or server.draining:
            message = "draining" if server is not None and server.draining else NOT_READY
            return web.json_response({"message": message}, status=503)
        return web.json_response({"message": "ready"})

    async def upstream_health(request: web.Request) -> web.Response:
        server = get_server()
        name = request.match_info["name"]
        balancer = server.runtime.balancers.get(name) if server is not None else None
        if balancer is None:
            return web.json_response({"message": "Not found"}, status=404)
        if request.query.get("balancer_health") in ("1", "true"):
            data: Any = balancer.balancer_health()
        else:
            data = balancer.health()
        return web.json_response({"data": data, "next": None, "node_id": node_id})

    app.router.add_get("/status", status)
    app.router.add_get("/status/ready", ready)
    app.router.add_get("/upstreams/{name}/health", upstream_health)
    return app


async def start_status_api(app: web.Application, listeners: tuple[Listen, ...]) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for listen in listeners:
        await web.TCPSite(runner, listen.host, listen.port, reuse_address=True).start()
    return runner
