"""``build_runtime`` with a delta (``Change``): what it reuses and what it rebuilds.

The router side is property-tested in test_router_properties.py; here, the service plans, whose
TLS contexts depend on certificates kept in the "rest" hash group with consumers and the like.
"""

from __future__ import annotations

from typing import Any

from zonegate.core import config_delta, declarative
from zonegate.core.canonical import config_hash
from zonegate.core.config import Config
from zonegate.core.config_delta import Change, ConfigDelta
from zonegate.data_plane.runtime import Runtime, build_runtime

from .test_proxy_tls_ws import self_signed


def document() -> dict[str, Any]:
    cert, key = self_signed("client.example")
    return {
        "_format_version": "3.0",
        "certificates": [{"id": "6d2f58b6-5b7c-4c7b-9b53-1a1d7d3c0a01", "cert": cert, "key": key}],
        "services": [
            {
                "name": "secure",
                "url": "https://backend.internal",
                "client_certificate": {"id": "6d2f58b6-5b7c-4c7b-9b53-1a1d7d3c0a01"},
                "routes": [{"name": "r", "paths": ["/r"]}],
            },
            {"name": "plain", "url": "http://other.internal", "routes": [{"name": "p", "paths": ["/p"]}]},
        ],
        "consumers": [{"username": "ann"}],
    }


def step(config: Config, previous: Runtime, delta: ConfigDelta) -> tuple[Config, Runtime]:
    changed = config_delta.apply(config, delta)
    runtime = build_runtime(changed, previous, known_hash=config_hash(changed), change=Change(config, delta))
    return changed, runtime


def test_a_consumer_change_keeps_every_service_plan() -> None:
    config = declarative.load(document())
    first = build_runtime(config)
    (consumer,) = config.of("consumers")
    _, runtime = step(config, first, ConfigDelta({"consumers": ({**consumer, "custom_id": "c"},)}, {}))
    assert runtime.services == first.services
    assert all(runtime.services[i] is plan for i, plan in first.services.items())


def test_a_certificate_change_re_plans_the_services_using_it() -> None:
    config = declarative.load(document())
    first = build_runtime(config)
    (certificate,) = config.of("certificates")
    cert, key = self_signed("rotated.example")
    changed, runtime = step(
        config, first, ConfigDelta({"certificates": ({**certificate, "cert": cert, "key": key},)}, {})
    )
    secure = next(s["id"] for s in changed.of("services") if s["name"] == "secure")
    assert runtime.services[secure].tls is not first.services[secure].tls
    # The same context a fresh build makes for the new certificate (contexts are cached by content).
    assert runtime.services[secure].tls is build_runtime(changed).services[secure].tls


def test_a_change_whose_base_is_another_config_is_not_trusted() -> None:
    config = declarative.load(document())
    first = build_runtime(config)
    (service,) = [s for s in config.of("services") if s["name"] == "plain"]
    changed = config_delta.apply(config, ConfigDelta({"services": ({**service, "retries": 1},)}, {}))
    # A change that names nothing, claimed from a config equal to the runtime's but not it: were
    # it trusted, the service's old plan (5 retries) would stay.
    other = declarative.load(document())
    claimed = Change(other, ConfigDelta({}, {}))
    runtime = build_runtime(changed, first, known_hash=config_hash(changed), change=claimed)
    assert runtime.services[service["id"]].retries == 1
