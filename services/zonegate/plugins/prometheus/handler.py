"""prometheus's handler: count each finished request into this process's registry (Kong's log phase).

The Status API's ``/metrics`` renders the registry (summed over worker processes) together with
the node-level families (connections, requests, upstream health, hybrid state); see
``data_plane.status_api``. Requests without a service are not counted, as in Kong.
"""

from __future__ import annotations

from zonegate import __version__
from zonegate.plugins.api import Plugin, PluginContext, SharedIndexes
from zonegate.plugins.prometheus.metrics import REGISTRY

WORKSPACE = "default"


class Prometheus(Plugin):
    NAME = "prometheus"
    PRIORITY = 13
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        config = self.config
        self.per_consumer: bool = config["per_consumer"]
        self.status_codes: bool = config["status_code_metrics"]
        self.latencies: bool = config["latency_metrics"]
        self.bandwidth: bool = config["bandwidth_metrics"]

    def log(self, ctx: PluginContext) -> None:
        if not (self.status_codes or self.latencies or self.bandwidth):
            return
        service = ctx.service
        if service is None:
            return
        # The numbers alone (``measures``), not the whole Kong log entry: the same values as
        # ``serialize()`` gives, at a fraction of the cost, on every request.
        numbers = ctx.request.measures()
        service_name = str(service.get("name") or service.get("host") or "")
        route = ctx.route
        route_name = str(route.get("name") or route.get("id") or "")
        consumer = ""
        if self.per_consumer and ctx.consumer is not None:
            consumer = str(ctx.consumer.get("username") or "")
        if self.status_codes:
            labels = (service_name, route_name, str(numbers.status), numbers.source)
            REGISTRY.inc("kong_http_requests_total", (*labels, WORKSPACE, consumer))
        if self.bandwidth:
            ingress, egress = numbers.request_size, numbers.response_size
            if ingress > 0:
                REGISTRY.inc(
                    "kong_bandwidth_bytes",
                    (service_name, route_name, "ingress", WORKSPACE, consumer),
                    ingress,
                )
            if egress > 0:
                REGISTRY.inc(
                    "kong_bandwidth_bytes", (service_name, route_name, "egress", WORKSPACE, consumer), egress
                )
        if self.latencies:
            where = (service_name, route_name, WORKSPACE)
            if numbers.request_ms >= 0:
                REGISTRY.observe("kong_request_latency_ms", where, numbers.request_ms)
            if numbers.proxy_ms >= 0:
                REGISTRY.observe("kong_upstream_latency_ms", where, numbers.proxy_ms)
            if numbers.kong_ms >= 0:
                REGISTRY.observe("kong_kong_latency_ms", where, numbers.kong_ms)
