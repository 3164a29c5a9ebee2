"""prometheus's config (Kong's ``kong/plugins/prometheus/schema.lua``, 3.x): same fields and
defaults, every family off until asked for. Kong's ``ai_metrics`` is accepted and ignored
(Zonegate has no AI plugins)."""

from __future__ import annotations

from typing import Final

from zonegate.core import fields as f

NAME: Final = "prometheus"


def _flag(description: str) -> f.Field:
    return f.boolean(required=True, default=False, description=description)


CONFIG: Final = f.record(
    (
        "per_consumer",
        _flag("Fill the consumer label of kong_http_requests_total and kong_bandwidth_bytes."),
    ),
    ("status_code_metrics", _flag("Export kong_http_requests_total.")),
    ("ai_metrics", _flag("Kong's AI metrics: accepted and ignored.")),
    (
        "latency_metrics",
        _flag("Export kong_kong_latency_ms, kong_upstream_latency_ms and kong_request_latency_ms."),
    ),
    ("bandwidth_metrics", _flag("Export kong_bandwidth_bytes.")),
    ("upstream_health_metrics", _flag("Export kong_upstream_target_health.")),
    required=True,
    default={},
)
