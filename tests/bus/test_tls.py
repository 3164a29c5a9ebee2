"""``bus.tls.client_tls``: the node's TLS context, and one line naming the setting for every bad file."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from bus.support import Pair, Pki, node_settings, write
from zonegate.bus import certificates, tls
from zonegate.bus.tls import ClusterTlsError
from zonegate.settings import load_settings


def test_shared_mode_pins_the_cluster_certificate(cluster_pair: Pair) -> None:
    settings = node_settings("shared", cluster_pair)
    client = tls.client_tls(settings)
    assert client.context.verify_mode == ssl.CERT_REQUIRED
    assert client.context.check_hostname is False
    assert client.hostname is None and tls.tls_hostname(settings) is None
    assert client.context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert certificates.common_name(client.certificate) == "zonegate_clustering"
    # The only trust anchor is the cluster certificate itself.
    anchors = client.context.get_ca_certs(binary_form=True)
    assert anchors == [client.certificate.public_bytes(serialization.Encoding.DER)]


def test_pki_mode_checks_the_server_name(pki: Pki) -> None:
    settings = node_settings("pki", pki.data_plane, pki.ca.cert, cluster_server_name="nats.internal")
    client = tls.client_tls(settings)
    assert client.context.check_hostname is True
    assert client.hostname == "nats.internal" == tls.tls_hostname(settings)
    assert client.connect_options() == {"tls": client.context, "tls_hostname": "nats.internal"}
    assert certificates.certificate_role(client.certificate) == "data_plane"
    unnamed = node_settings("pki", pki.control_plane, pki.ca.cert)
    assert tls.client_tls(unnamed).hostname is None  # nats-py then checks the URL's host


def error(settings_env: dict[str, str]) -> ClusterTlsError:
    with pytest.raises(ClusterTlsError) as caught:
        tls.client_tls(load_settings(settings_env, None))
    assert "\n" not in str(caught.value)
    return caught.value


def env(cert: Path, key: Path, mode: str = "shared", ca: Path | None = None) -> dict[str, str]:
    values = {
        "ZONEGATE_CLUSTER_MTLS": mode,
        "ZONEGATE_CLUSTER_CERT": str(cert),
        "ZONEGATE_CLUSTER_CERT_KEY": str(key),
    }
    if ca is not None:
        values["ZONEGATE_CLUSTER_CA_CERT"] = str(ca)
    return values


def test_every_bad_file_is_one_line_naming_the_setting(tmp_path: Path, cluster_pair: Pair, pki: Pki) -> None:
    missing = error({})
    assert missing.setting == "cluster_cert" and "cluster_cert must be set" in str(missing)

    absent = error(env(tmp_path / "nope.crt", cluster_pair.key))
    assert (
        absent.setting == "cluster_cert"
        and str(absent) == f"cluster_cert {tmp_path / 'nope.crt'}: no such file"
    )

    assert "is a directory" in str(error(env(tmp_path, cluster_pair.key)))

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert str(error(env(garbage, cluster_pair.key))) == f"cluster_cert {garbage} is not a PEM certificate"
    bad_key = error(env(cluster_pair.cert, garbage))
    assert bad_key.setting == "cluster_cert_key" and "is not a PEM private key" in str(bad_key)

    other = write(certificates.generate_cluster_certificate(), tmp_path, "other")
    mismatch = error(env(cluster_pair.cert, other.key))
    assert mismatch.setting == "cluster_cert_key"
    assert str(mismatch) == f"cluster_cert_key {other.key} does not match cluster_cert {cluster_pair.cert}"

    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(cluster_pair.key.read_bytes(), password=None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert "is encrypted" in str(error(env(cluster_pair.cert, encrypted)))

    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    expired = write(certificates.generate_cluster_certificate(days=2, now=past), tmp_path, "expired")
    expired_error = error(env(expired.cert, expired.key))
    assert expired_error.setting == "cluster_cert" and "expired on" in str(expired_error)

    # pki: the CA file, and a node certificate that another CA signed.
    no_ca = error(env(pki.data_plane.cert, pki.data_plane.key, "pki", tmp_path / "ca.crt"))
    assert no_ca.setting == "cluster_ca_cert" and "no such file" in str(no_ca)
    stranger = error(env(pki.stranger.cert, pki.stranger.key, "pki", pki.ca.cert))
    assert stranger.setting == "cluster_cert" and "is not signed by cluster_ca_cert" in str(stranger)


def test_an_expired_ca_is_named(tmp_path: Path) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    ca = certificates.generate_ca(days=10, now=past)
    # Our tools never issue past the CA's end; other tools may: build the leaf by hand.
    leaf = certificates.issue_certificate(ca, role="data_plane", name="dp1", days=5, now=past)
    fresh = leaf.cert
    builder = (
        x509.CertificateBuilder()
        .subject_name(fresh.subject)
        .issuer_name(ca.cert.subject)
        .public_key(leaf.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    )
    for extension in fresh.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    node = write(certificates.Issued(builder.sign(ca.key, hashes.SHA384()), leaf.key), tmp_path, "node")
    ca_pair = write(ca, tmp_path, "ca")
    expired = error(env(node.cert, node.key, "pki", ca_pair.cert))
    assert expired.setting == "cluster_ca_cert" and "expired on" in str(expired)
