"""``bus.certificates``: roles, expiry, who may sign, and files written without overwriting."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest

from bus.support import role_less_certificate
from zonegate.bus import certificates
from zonegate.bus.certificates import CertificateError


def test_roles_come_from_the_role_identity() -> None:
    ca = certificates.generate_ca()
    cp = certificates.issue_certificate(ca, role="control_plane", name="cp1")
    dp = certificates.issue_certificate(ca, role="data_plane", name="dp1")
    server = certificates.issue_certificate(ca, role="server", name="nats-1", hosts=["10.0.0.1"])
    assert certificates.certificate_role(cp.cert) == "control_plane"
    assert certificates.certificate_role(dp.cert) == "data_plane"
    assert certificates.certificate_role(server.cert) is None
    assert certificates.certificate_role(role_less_certificate(ca, "x").cert) is None
    assert certificates.certificate_role(certificates.generate_cluster_certificate().cert) is None


def test_check_node_certificate_wants_the_ca_validity_and_a_role() -> None:
    ca = certificates.generate_ca()
    cp = certificates.issue_certificate(ca, role="control_plane", name="cp1")
    assert certificates.check_node_certificate(cp.cert, ca.cert) == "control_plane"
    other = certificates.generate_ca(common_name="other")
    with pytest.raises(CertificateError, match="is not issued by CA CN=other"):
        certificates.check_node_certificate(cp.cert, other.cert)
    later = certificates.certificate_expiry(cp.cert) + dt.timedelta(seconds=1)
    with pytest.raises(CertificateError, match="expired on"):
        certificates.check_node_certificate(cp.cert, ca.cert, now=later)
    with pytest.raises(CertificateError, match="no zonegate role identity"):
        certificates.check_node_certificate(role_less_certificate(ca, "rogue").cert, ca.cert)


def test_expiry_is_the_end_of_validity() -> None:
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    cert = certificates.generate_cluster_certificate(days=10, now=start).cert
    assert certificates.certificate_expiry(cert) == start + dt.timedelta(days=10)
    assert certificates.certificate_expiry(cert).tzinfo is not None


def test_role_identities_cannot_be_smuggled_in_as_names() -> None:
    ca = certificates.generate_ca()
    for name in ("control-plane.zonegate", "CONTROL-PLANE.zonegate.", "server.zonegate"):
        with pytest.raises(CertificateError, match="reserved for a role identity"):
            certificates.issue_certificate(ca, role="data_plane", name="dp1", hosts=[name])
        with pytest.raises(CertificateError, match="reserved for a role identity"):
            certificates.generate_cluster_certificate(hosts=[name])


def test_write_pair_never_overwrites_and_keeps_the_key_private(tmp_path: Path) -> None:
    issued = certificates.generate_cluster_certificate()
    cert, key = tmp_path / "c.crt", tmp_path / "c.key"
    previous = os.umask(0o022)
    try:
        certificates.write_pair(issued, cert, key)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(cert.stat().st_mode) == 0o644
    with pytest.raises(CertificateError, match="already exists"):
        certificates.write_pair(certificates.generate_cluster_certificate(), cert, key)
    assert cert.read_bytes() == issued.cert_pem() and key.read_bytes() == issued.key_pem()
    # A dangling symlink where the key goes is not followed (no writing through an attacker's link).
    (tmp_path / "link.key").symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(CertificateError, match="already exists"):
        certificates.write_pair(issued, tmp_path / "link.crt", tmp_path / "link.key")
    assert not (tmp_path / "elsewhere.key").exists() and not (tmp_path / "link.crt").exists()
