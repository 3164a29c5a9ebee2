"""The data plane's half of hybrid mode, wired from the settings: bus, config agent, heartbeats.

The node starts serving before any of this connects (from its cache or declarative file); the
bus then brings newer snapshots. Everything here only ever calls back into the node through
``SnapshotTarget.apply_snapshot``, the same swap a reload uses.
"""

from __future__ import annotations

import socket
from typing import Any

import structlog

from zonegate.bus.certificates import certificate_expiry
from zonegate.bus.connection import BusConnection, node_options
from zonegate.bus.signing import UnusableKey, Verifier
from zonegate.bus.subjects import DEFAULT_GROUP, Names
from zonegate.bus.tls import client_tls
from zonegate.data_plane.config_agent import ConfigAgent, SnapshotTarget, SyncState
from zonegate.data_plane.heartbeat import Heartbeats, Identity
from zonegate.plugins.bundled import plugin_versions
from zonegate.process_control import StartError
from zonegate.settings import Settings

log = structlog.get_logger(__name__)


def verifier_for(settings: Settings) -> Verifier:
    if settings.cluster_mtls == "pki":
        assert settings.cluster_ca_cert is not None  # settings validation requires it in pki mode
        return Verifier.pki(settings.resolve_path(settings.cluster_ca_cert))
    assert settings.cluster_cert is not None
    return Verifier.shared(settings.resolve_path(settings.cluster_cert))


class DataPlaneHybrid:
    """Owns the data plane's bus objects; ``start`` then ``close``."""

    def __init__(self, settings: Settings, target: SnapshotTarget, node_id: str, state: SyncState) -> None:
        if settings.cluster_cert is None or settings.cluster_cert_key is None:
            raise StartError(["cluster_cert and cluster_cert_key must be set when role = data_plane"])
        self.names = Names(settings.cluster_name)
        self.state = state
        try:
            tls = client_tls(settings)
            verifier = verifier_for(settings)
            expiry = certificate_expiry(tls.certificate)
        except (UnusableKey, ValueError) as exc:
            raise StartError([str(exc)]) from None
        plugins = plugin_versions(settings.plugins)
        self.bus = BusConnection(
            node_options(settings, tls, role="dp", node_id=node_id), on_connect=self._on_connect
        )
        self.agent = ConfigAgent(
            bus=self.bus,
            names=self.names,
            group=DEFAULT_GROUP,
            verifier=verifier,
            target=target,
            state=state,
            node_id=node_id,
            installed_plugins=plugins,
            watchdog_interval=settings.cluster_watchdog_interval,
        )
        self.heartbeats = Heartbeats(
            bus=self.bus,
            names=self.names,
            identity=Identity(
                node_id=node_id,
                hostname=socket.gethostname(),
                labels=dict(settings.cluster_dp_labels),
                plugins=plugins,
                cert_expiry=int(expiry.timestamp()),
                group=DEFAULT_GROUP,
            ),
            state=state,
            interval=settings.cluster_heartbeat_interval,
        )

    def status(self) -> dict[str, Any]:
        state = self.state
        return {
            "bus_connected": self.bus.is_connected,
            "bus_reconnects": self.bus.reconnects,
            "config_version": state.version,
            "config_hash": state.config_hash,
            "sync_status": state.status,
            "last_error": state.last_error or self.bus.last_error or None,
            "rejected_version": state.rejected_version or None,
            "applied_at": state.applied_at or None,
        }

    async def _on_connect(self) -> None:
        await self.heartbeats.send_now()  # show up on the control plane at once
        await self.agent.on_connect()
        await self.heartbeats.send_now()  # and with what we now serve

    async def start(self) -> None:
        await self.agent.start()
        await self.heartbeats.start()
        await self.bus.start()

    async def close(self) -> None:
        await self.heartbeats.close()
        await self.agent.close()
        await self.bus.close()
