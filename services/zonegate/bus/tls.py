"""The TLS context a node (control plane or data plane) connects to NATS with.

- shared mode (``cluster_mtls = shared``): the node presents the cluster certificate and trusts
  only that same certificate. Host names are not checked: the one cluster certificate is pinned
  as the sole trust anchor, so whoever presents it is a cluster member wherever it runs (Kong does
  the same with its fixed ``kong_clustering`` name, and Python ignores the CN for host names).
- pki mode: the node presents its own certificate and trusts ``cluster_ca_cert``; the server's
  host name is checked, against ``cluster_server_name`` when set (give it to nats-py as
  ``tls_hostname``), else against the host of the NATS URL.

Every problem with the files is found here, before connecting, and reported as one line naming
the setting: nats-server would only close the connection without saying why.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from zonegate.bus import certificates
from zonegate.bus.certificates import CertificateError
from zonegate.settings import Settings

_T = TypeVar("_T")


class ClusterTlsError(ValueError):
    """A cluster TLS setting that cannot be used; ``str(error)`` is one line naming the setting."""

    def __init__(self, message: str, *, setting: str) -> None:
        self.setting = setting
        super().__init__(" ".join(message.splitlines()))


@dataclass(frozen=True, slots=True)
class ClientTls:
    """What ``nats.connect`` needs: ``tls=context``, ``tls_hostname=hostname``."""

    context: ssl.SSLContext
    hostname: str | None
    certificate: x509.Certificate  # this node's own, for its role and expiry (heartbeats)

    def connect_options(self) -> dict[str, Any]:
        return {"tls": self.context, "tls_hostname": self.hostname}


def client_tls(settings: Settings, *, now: dt.datetime | None = None) -> ClientTls:
    """Check the cluster certificate files of ``settings`` and build the client TLS context."""
    cert_path, key_path = (
        _required(settings.cluster_cert, "cluster_cert"),
        _required(settings.cluster_cert_key, "cluster_cert_key"),
    )
    chain = _guard("cluster_cert", lambda: certificates.load_certificates_file(cert_path, "cluster_cert"))
    cert = chain[0]
    key = _guard("cluster_cert_key", lambda: certificates.load_private_key_file(key_path, "cluster_cert_key"))
    if not certificates.key_matches(cert, key):
        # OpenSSL pairs the key with the first certificate; in a rotation bundle, say where it is.
        position = next((i for i, c in enumerate(chain[1:], 2) if certificates.key_matches(c, key)), 0)
        if position:
            raise ClusterTlsError(
                f"cluster_cert_key {key_path} matches certificate {position} of cluster_cert {cert_path}, "
                "not the first: put this key's certificate first",
                setting="cluster_cert",
            )
        raise ClusterTlsError(
            f"cluster_cert_key {key_path} does not match cluster_cert {cert_path}", setting="cluster_cert_key"
        )
    prefix = f"cluster_cert {cert_path}: "
    _guard("cluster_cert", lambda: certificates.check_validity(cert, now=now), prefix=prefix)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _guard_ssl("cluster_cert", lambda: context.load_cert_chain(str(cert_path), str(key_path)), cert_path)
    if settings.cluster_mtls == "shared":
        # Pinned: the cluster certificate is the only trust anchor, the host name is irrelevant.
        context.check_hostname = False
        _guard_ssl("cluster_cert", lambda: context.load_verify_locations(cafile=str(cert_path)), cert_path)
        return ClientTls(context, None, cert)

    ca_path = _required(settings.cluster_ca_cert, "cluster_ca_cert")
    cas = _guard("cluster_ca_cert", lambda: certificates.load_certificates_file(ca_path, "cluster_ca_cert"))
    issuers = [ca for ca in cas if _issued_by(cert, ca)]
    if len(chain) == 1 and not issuers:
        # With intermediates in cluster_cert the server checks the chain; a lone leaf must come
        # straight from the CA, and saying so here beats a TLS alert with no reason.
        raise ClusterTlsError(
            f"cluster_cert {cert_path} ({certificates.describe(cert)}) "
            f"is not signed by cluster_ca_cert {ca_path}",
            setting="cluster_cert",
        )
    if issuers:
        issuer, ca_prefix = issuers[0], f"cluster_ca_cert {ca_path}: "
        _guard("cluster_ca_cert", lambda: certificates.check_validity(issuer, now=now), prefix=ca_prefix)
    _guard_ssl("cluster_ca_cert", lambda: context.load_verify_locations(cafile=str(ca_path)), ca_path)
    return ClientTls(context, settings.cluster_server_name, cert)


def client_ssl_context(settings: Settings) -> ssl.SSLContext:
    """The ``tls=`` context for ``nats.connect``; see ``client_tls`` for ``tls_hostname`` too."""
    return client_tls(settings).context


def tls_hostname(settings: Settings) -> str | None:
    """``tls_hostname=`` for nats-py; None: the URL's host (pki) or no check at all (shared)."""
    return settings.cluster_server_name if settings.cluster_mtls == "pki" else None


# -- helpers ------------------------------------------------------------------------------------------


def _required(path: Path | None, setting: str) -> Path:
    if path is None:
        raise ClusterTlsError(
            f"{setting} must be set: the bus accepts only mTLS clients (ZONEGATE_{setting.upper()})",
            setting=setting,
        )
    return path


def _guard(setting: str, action: Callable[[], _T], *, prefix: str = "") -> _T:
    try:
        return action()
    except CertificateError as exc:
        raise ClusterTlsError(f"{prefix}{exc}", setting=setting) from None


def _guard_ssl(setting: str, action: Callable[[], None], path: Path) -> None:
    try:
        action()
    except ssl.SSLError as exc:
        reason = exc.reason or exc.strerror or str(exc)
        raise ClusterTlsError(f"{setting} {path}: rejected by OpenSSL: {reason}", setting=setting) from None
    except OSError as exc:
        message = f"{setting} {path}: cannot read: {exc.strerror or exc}"
        raise ClusterTlsError(message, setting=setting) from None


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
