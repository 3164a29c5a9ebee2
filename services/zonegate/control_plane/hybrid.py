"""The control plane's half of hybrid mode, wired from the settings: bus, publisher, collector.

With ``role = control_plane`` every replica connects to the bus, collects data-plane heartbeats
and acks (one queue group, so each message is handled once), and competes for the publisher
lock; the holder publishes snapshots. The Admin API never waits on any of this: a control plane
whose bus is down still takes writes, and the publisher catches up when the bus is back.
"""

from __future__ import annotations

import structlog

from zonegate.bus.connection import BusConnection, node_options
from zonegate.bus.signing import Signer, UnusableKey
from zonegate.bus.subjects import Names
from zonegate.bus.tls import client_tls
from zonegate.control_plane.data_planes import DataPlaneCollector
from zonegate.control_plane.publisher import Publisher, PublisherOptions
from zonegate.control_plane.store import Store
from zonegate.plugins.bundled import plugin_versions
from zonegate.process_control import StartError
from zonegate.settings import Settings

log = structlog.get_logger(__name__)


class ControlPlaneHybrid:
    """Owns the control plane's bus objects; ``start`` then ``close``."""

    def __init__(self, settings: Settings, store: Store, node_id: str) -> None:
        if settings.cluster_cert is None or settings.cluster_cert_key is None:
            raise StartError(["cluster_cert and cluster_cert_key must be set when role = control_plane"])
        self.names = Names(settings.cluster_name)
        try:
            tls = client_tls(settings)
            signer = Signer.from_files(
                settings.resolve_path(settings.cluster_cert),
                settings.resolve_path(settings.cluster_cert_key),
                include_certificate=settings.cluster_mtls == "pki",
            )
        except (UnusableKey, ValueError) as exc:
            raise StartError([str(exc)]) from None
        self.bus = BusConnection(
            node_options(settings, tls, role="cp", node_id=node_id), on_connect=self._on_connect
        )
        self.publisher = Publisher(
            store,
            self.bus,
            signer,
            settings.postgres_dsn(),
            PublisherOptions(
                names=self.names,
                history=settings.cluster_snapshot_history,
                min_interval=settings.cluster_publish_interval,
                node_id=node_id,
                plugin_versions=plugin_versions(settings.plugins),
                hub_domain=settings.cluster_js_domain,
                region_domains=settings.cluster_region_domains,
                replicas=settings.cluster_js_replicas,
            ),
        )
        self.collector = DataPlaneCollector(
            store.database, self.bus, self.names, purge_delay=settings.cluster_data_plane_purge_delay
        )

    async def _on_connect(self) -> None:
        await self.collector.on_connect()

    async def start(self) -> None:
        await self.bus.start()
        await self.collector.start()
        await self.publisher.start()

    async def close(self) -> None:
        await self.publisher.close()
        await self.collector.close()
        await self.bus.close()
