"""Every subject, stream and bucket name on the bus, in one place (DESIGN section 3).

Nothing else in the code base spells a subject string: the publisher, the config agent, the
NATS server configuration generator (its permissions) and the tests all ask this module. Names
are scoped by the cluster name, so several clusters can share one NATS deployment.

Layout, for cluster ``c``:

- ``zg.c.config.<group>``: config snapshots, captured by the stream ``ZG_CONFIG_c`` that keeps
  the last N per group. Only a control plane publishes here.
- ``zg.c.notify.<group>``: a small announcement after each snapshot (plain NATS, no stream). Data
  planes listen here, never on the config subjects (see ``nats_config``, least privilege).
- ``zg.c.dp.<node id>.ack`` / ``.heartbeat`` / ``.telemetry``: what a data plane sends back.
  A data plane publishes under ``zg.c.dp.>`` only.
- Object store bucket ``ZG_SNAPSHOTS_c`` (its stream is ``OBJ_ZG_SNAPSHOTS_c``): snapshot payloads
  too large for one message.
- KV bucket ``ZG_RATELIMIT_c`` (stream ``KV_ZG_RATELIMIT_c``, subjects ``$KV.ZG_RATELIMIT_c.>``):
  rate-limiting counters of the ``cluster`` policy, shared by every data plane. The control plane
  creates it, in the hub's JetStream domain only; data planes only read and compare-and-set keys
  in it, a region's through ``$JS.<hub domain>.API.$KV.ZG_RATELIMIT_c.>`` (``in_domain``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

PREFIX: Final = "zg"
DEFAULT_GROUP: Final = "default"
CP_QUEUE_GROUP: Final = "zonegate-control-planes"
OBJECT_STREAM_PREFIX: Final = "OBJ_"  # nats-server names an object store's stream OBJ_<bucket>
KV_STREAM_PREFIX: Final = "KV_"  # and a KV bucket's stream KV_<bucket>

# A token is what may appear between dots in a subject and in a stream name: no dots, no
# wildcards, no whitespace. Settings already restrict cluster names to this.
_TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9_-]+$")


def check_token(value: str, what: str) -> str:
    if not _TOKEN_RE.match(value):
        raise ValueError(f"{what} {value!r} must use only letters, digits, '-' and '_'")
    return value


@dataclass(frozen=True, slots=True)
class Names:
    """The bus names of one cluster."""

    cluster: str

    def __post_init__(self) -> None:
        check_token(self.cluster, "cluster name")

    # ---- config, written by the publishing control plane ----
    @property
    def config_stream(self) -> str:
        return f"ZG_CONFIG_{self.cluster}"

    @property
    def config_wildcard(self) -> str:
        return f"{PREFIX}.{self.cluster}.config.>"

    def config_subject(self, group: str = DEFAULT_GROUP) -> str:
        return f"{PREFIX}.{self.cluster}.config.{check_token(group, 'config group')}"

    @property
    def notify_wildcard(self) -> str:
        return f"{PREFIX}.{self.cluster}.notify.>"

    def notify_subject(self, group: str = DEFAULT_GROUP) -> str:
        return f"{PREFIX}.{self.cluster}.notify.{check_token(group, 'config group')}"

    @property
    def snapshot_bucket(self) -> str:
        return f"ZG_SNAPSHOTS_{self.cluster}"

    @property
    def snapshot_object_stream(self) -> str:
        return f"{OBJECT_STREAM_PREFIX}{self.snapshot_bucket}"

    # ---- cluster-wide rate-limiting counters (KV) ----
    @property
    def ratelimit_bucket(self) -> str:
        return f"ZG_RATELIMIT_{self.cluster}"

    @property
    def ratelimit_stream(self) -> str:
        return f"{KV_STREAM_PREFIX}{self.ratelimit_bucket}"

    @property
    def ratelimit_wildcard(self) -> str:
        return f"$KV.{self.ratelimit_bucket}.>"

    def ratelimit_subject(self, key: str) -> str:
        """The subject of one counter; ``key`` is dot-separated tokens (see ``check_token``)."""
        for token in key.split("."):
            check_token(token, "rate-limit key token")
        return f"$KV.{self.ratelimit_bucket}.{key}"

    # ---- data plane to control plane ----
    @property
    def data_plane_wildcard(self) -> str:
        return f"{PREFIX}.{self.cluster}.dp.>"

    def data_plane_prefix(self, node_id: str) -> str:
        return f"{PREFIX}.{self.cluster}.dp.{check_token(node_id, 'node id')}"

    def ack_subject(self, node_id: str) -> str:
        return f"{self.data_plane_prefix(node_id)}.ack"

    def heartbeat_subject(self, node_id: str) -> str:
        return f"{self.data_plane_prefix(node_id)}.heartbeat"

    def telemetry_subject(self, node_id: str) -> str:
        return f"{self.data_plane_prefix(node_id)}.telemetry"

    @property
    def acks(self) -> str:
        return f"{PREFIX}.{self.cluster}.dp.*.ack"

    @property
    def heartbeats(self) -> str:
        return f"{PREFIX}.{self.cluster}.dp.*.heartbeat"

    @property
    def telemetry(self) -> str:
        return f"{PREFIX}.{self.cluster}.dp.*.telemetry"


def in_domain(subject: str, domain: str | None) -> str:
    """A KV subject (``$KV.<bucket>.<key>``) addressed to the bucket in JetStream domain ``domain``.

    Over a leaf link between two JetStream domains nats-server denies ``$KV.>`` and maps
    ``$JS.<domain>.API.$KV.>`` back to ``$KV.>`` on the far side, so a client writes to a bucket of
    another domain under that prefix, as nats.go's KV does (nats-architecture-and-design ADR-19,
    "API prefixes for materialized JetStream views"). ``None``: the local domain, ``subject`` as is.
    """
    if domain is None:
        return subject
    return f"$JS.{check_token(domain, 'JetStream domain')}.API.{subject}"


def node_from_subject(subject: str) -> str | None:
    """The node id in ``zg.<cluster>.dp.<node>.<kind>``, or None for any other subject."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != PREFIX or parts[2] != "dp":
        return None
    return parts[3]


# In PKI mode a node certificate carries one of these SAN DNS names besides its own: nats-server's
# verify_and_map maps it to the NATS user of that role (one user per role, whatever the number of
# nodes), and a data plane accepts a snapshot signature only from a certificate with the CP name.
CONTROL_PLANE_IDENTITY: Final = "control-plane.zonegate"
DATA_PLANE_IDENTITY: Final = "data-plane.zonegate"
# A nats-server certificate carries this SAN DNS name: the routes and leaf-node listeners map it
# (verify_and_map), so a node certificate, which lacks it, cannot open a route or a leaf link.
SERVER_IDENTITY: Final = "server.zonegate"
