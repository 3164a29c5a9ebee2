"""Everything a worker needs to proxy under one config, built off the hot path and swapped in whole.

A ``Runtime`` is immutable once built: the router, the balancers, one ``ServicePlan`` per
service (its resolved scheme, address, timeouts in seconds, TLS context) and the header
options. A reload builds a new one next to the old and replaces it with one assignment, so a
request always sees one consistent config from start to end. Sub-hashes tell which parts
changed: the router is rebuilt only when routes or services changed, balancers only when
upstreams or targets did (Kong's rule).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from zonegate.core.canonical import ConfigHash, config_hash
from zonegate.core.config import Config
from zonegate.core.config_delta import Change, ConfigDelta
from zonegate.data_plane.balancer import Balancers
from zonegate.data_plane.router import Router, compile_router
from zonegate.data_plane.tls import UpstreamTls, build_upstream_tls
from zonegate.plugins.api import Plugin
from zonegate.plugins.chains import PluginSet

DEFAULT_PORTS: Final = {"http": 80, "https": 443, "grpc": 80, "grpcs": 443}
_TLS_KINDS: Final = frozenset({"certificates", "ca_certificates"})  # what a service plan's TLS reads


@dataclass(frozen=True, slots=True)
class HeaderOptions:
    """Which of Kong's own headers to add (the ``headers`` setting)."""

    server_tokens: bool = True
    latency_tokens: bool = True
    request_id: bool = True

    @classmethod
    def from_tokens(cls, tokens: tuple[str, ...]) -> HeaderOptions:
        wanted = {t.lower() for t in tokens}
        return cls(
            server_tokens="server_tokens" in wanted or "via" in wanted,
            latency_tokens="latency_tokens" in wanted or "x-kong-upstream-latency" in wanted,
            request_id="x-kong-request-id" in wanted or "server_tokens" in wanted,
        )


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """A service as the proxy uses it: no per-request lookups into the entity dict."""

    id: str
    name: str | None
    scheme: str
    host: str
    port: int
    path: str | None
    retries: int
    connect_timeout: float
    write_timeout: float
    read_timeout: float
    upstream_name: str | None  # set when ``host`` names an upstream: the balancer picks targets
    tls: UpstreamTls | None
    # The Host sent upstream when the service is not an upstream name; Kong leaves ``:port``
    # out on the scheme's default port.
    host_header: str
    # The entity it was planned from: the next config's plan is this one when the entity is the
    # same object (a delta keeps unchanged entities) and nothing it depends on changed.
    source: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def tls_context(self) -> ssl.SSLContext | None:
        return self.tls.context if self.tls is not None else None


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    max_body_bytes: int = 0  # 0 = unlimited
    buffer_bytes: int = 1024 * 1024  # request/response buffering keeps at most this much in memory
    keepalive_timeout: float = 60.0
    header_timeout: float = 60.0
    body_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class Runtime:
    config: Config
    hash: ConfigHash
    router: Router
    balancers: Balancers
    services: Mapping[str, ServicePlan]
    headers: HeaderOptions = field(default_factory=HeaderOptions)
    limits: Limits = field(default_factory=Limits)
    plugins: PluginSet = field(default_factory=lambda: PluginSet(Config(), {}))
    plugin_handlers: Mapping[str, type[Plugin]] = field(default_factory=dict)

    @property
    def config_hash(self) -> str:
        return self.hash.config_hash


def plan_services(
    config: Config,
    balancers: Balancers,
    previous: Mapping[str, ServicePlan] | None = None,
    change: ConfigDelta | None = None,
) -> dict[str, ServicePlan]:
    """``previous``: plans made with the same balancers and TLS material, reused by identity;
    ``change``: exactly what turned their config into ``config``, so only its services are planned."""
    certificates = config.by_id("certificates")
    ca_certificates = config.by_id("ca_certificates")
    if previous is not None and change is not None:
        plans = dict(previous)
        for service_id in change.deletes.get("services", ()):
            plans.pop(service_id, None)
        for service in change.upserts.get("services", ()):
            plans[service["id"]] = _plan(service, balancers, certificates, ca_certificates)
        return plans
    plans = {}
    for service in config.of("services"):
        before = previous.get(service["id"]) if previous is not None else None
        if before is not None and before.source is service:
            plans[service["id"]] = before
        else:
            plans[service["id"]] = _plan(service, balancers, certificates, ca_certificates)
    return plans


def _plan(
    service: dict[str, Any],
    balancers: Balancers,
    certificates: dict[str, Any],
    ca_certificates: dict[str, Any],
) -> ServicePlan:
    scheme = service["protocol"]
    tls = None
    if scheme in ("https", "grpcs", "tls"):
        tls = build_upstream_tls(service, certificates, ca_certificates)
    upstream_name = service["host"] if balancers.get(service["host"]) is not None else None
    return ServicePlan(
        id=service["id"],
        name=service.get("name"),
        scheme=scheme,
        host=service["host"],
        port=service["port"],
        path=service.get("path"),
        retries=service["retries"],
        connect_timeout=service["connect_timeout"] / 1000,
        write_timeout=service["write_timeout"] / 1000,
        read_timeout=service["read_timeout"] / 1000,
        upstream_name=upstream_name,
        tls=tls,
        host_header=service["host"]
        if DEFAULT_PORTS.get(scheme) == service["port"]
        else f"{service['host']}:{service['port']}",
        source=service,
    )


def build_runtime(
    config: Config,
    previous: Runtime | None = None,
    *,
    headers: HeaderOptions | None = None,
    limits: Limits | None = None,
    plugin_handlers: Mapping[str, type[Plugin]] | None = None,
    known_hash: ConfigHash | None = None,
    change: Change | None = None,
) -> Runtime:
    """Compile a config; reuse the parts of ``previous`` whose sub-hashes did not change.

    ``known_hash``: the hashes a signed snapshot carries, so the config is not hashed again.
    ``change``: the delta that turned ``previous.config`` into ``config`` (a delta snapshot), so
    the router and the service plans look only at what it names instead of every entity; it is
    ignored unless its base is ``previous.config`` itself."""
    new_hash = known_hash if known_hash is not None else config_hash(config)
    delta: ConfigDelta | None = None
    if previous is not None and change is not None and change.base is previous.config:
        delta = change.delta
    changed = new_hash.changed_groups(previous.hash if previous is not None else None)
    if previous is not None and not changed & {"routes", "services"}:
        router = previous.router
    else:
        router = compile_router(
            config, previous=previous.router if previous is not None else None, change=delta
        )
    if previous is not None and not changed & {"upstreams", "targets"}:
        balancers = previous.balancers
    else:
        balancers = Balancers.build(config, previous.balancers if previous is not None else None)
    # Certificates are in "rest": a change there may change any service's TLS; a delta says
    # whether the "rest" that changed holds any (a consumer change does not re-plan services).
    tls_unchanged = "rest" not in changed or (
        delta is not None and not _TLS_KINDS & {*delta.upserts, *delta.deletes}
    )
    reusable = (
        previous.services
        if previous is not None and balancers is previous.balancers and tls_unchanged
        else None
    )
    services = plan_services(config, balancers, reusable, delta if reusable is not None else None)
    handlers = (
        plugin_handlers if plugin_handlers is not None else (previous.plugin_handlers if previous else {})
    )
    if previous is not None and plugin_handlers is None and not changed & {"plugins", "rest"}:
        plugins = previous.plugins
    else:
        # Plugin instances hold per-config lookups (credentials, consumers): rebuilt with them.
        plugins = PluginSet(config, handlers)
    return Runtime(
        config=config,
        hash=new_hash,
        router=router,
        balancers=balancers,
        services=services,
        headers=headers or (previous.headers if previous else HeaderOptions()),
        limits=limits or (previous.limits if previous else Limits()),
        plugins=plugins,
        plugin_handlers=handlers,
    )
