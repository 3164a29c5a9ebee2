"""Snapshot signatures during a key rotation: a data plane trusts every certificate (shared mode)
or every CA (pki mode) of its bundle, and nothing outside it. Real keys, the real codec."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bus.support import Pair, node_settings, write
from zonegate.bus import certificates, snapshot
from zonegate.bus.certificates import Issued
from zonegate.bus.signing import Signer, UnusableKey, Verifier
from zonegate.bus.subjects import CONTROL_PLANE_IDENTITY
from zonegate.bus.tls import ClusterTlsError, client_tls
from zonegate.core import declarative

CONFIG = declarative.loads('_format_version: "3.0"\nservices: [{name: orders, url: "http://orders:8080"}]\n')


def bundle(path: Path, *pairs: Pair) -> Path:
    path.write_bytes(b"".join(pair.cert.read_bytes() for pair in pairs))
    return path


def signed(signer: Signer, version: int = 3) -> bytes:
    return snapshot.encode(
        CONFIG,
        version=version,
        cluster="default",
        group="default",
        signer=signer,
        signer_node="cp-1",
        plugin_versions={},
        inline_limit=1 << 20,
        bucket="ZG_SNAPSHOTS_default",
    ).message


def opens(message: bytes, verifier: Verifier) -> int:
    return snapshot.open_message(message, verifier, cluster="default", group="default").version


@dataclass(frozen=True)
class Shared:
    old: Pair
    new: Pair
    old_first: Path  # what every node holds during a rotation
    new_first: Path


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Shared:
    directory = tmp_path_factory.mktemp("shared-rotation")
    old = write(certificates.generate_cluster_certificate(), directory, "old")
    new = write(certificates.generate_cluster_certificate(), directory, "new")
    return Shared(
        old, new, bundle(directory / "old-first.crt", old, new), bundle(directory / "new-first.crt", new, old)
    )


def test_shared_bundle_accepts_both_keys(shared: Shared) -> None:
    by_old = signed(Signer.from_files(shared.old.cert, shared.old.key, include_certificate=False))
    by_new = signed(Signer.from_files(shared.new.cert, shared.new.key, include_certificate=False))
    for trusted in (shared.old_first, shared.new_first):
        verifier = Verifier.shared(trusted)
        assert opens(by_old, verifier) == 3
        assert opens(by_new, verifier) == 3


def test_shared_single_certificate_refuses_the_other_key(shared: Shared) -> None:
    by_old = signed(Signer.from_files(shared.old.cert, shared.old.key, include_certificate=False))
    by_new = signed(Signer.from_files(shared.new.cert, shared.new.key, include_certificate=False))
    only_old = Verifier.shared(shared.old.cert)
    assert opens(by_old, only_old) == 3
    with pytest.raises(snapshot.SnapshotRejected, match="signature check failed: bad signature"):
        opens(by_new, only_old)
    with pytest.raises(snapshot.SnapshotRejected, match="bad signature"):
        opens(by_old, Verifier.shared(shared.new.cert))


def test_a_node_signs_with_the_first_certificate_of_its_bundle(shared: Shared) -> None:
    signer = Signer.from_files(shared.old_first, shared.old.key, include_certificate=False)
    assert opens(signed(signer), Verifier.shared(shared.old.cert)) == 3
    # The key of the second certificate: refused with where the key's certificate is, as TLS does.
    with pytest.raises(UnusableKey, match=r"matches certificate 2 of cluster_cert .*put this key's"):
        Signer.from_files(shared.old_first, shared.new.key, include_certificate=False)
    with pytest.raises(ClusterTlsError, match="matches certificate 2 of cluster_cert") as caught:
        client_tls(node_settings("shared", Pair(shared.old_first, shared.new.key)))
    assert caught.value.setting == "cluster_cert"
    stranger = write(certificates.generate_cluster_certificate(), shared.old.cert.parent, "stranger")
    with pytest.raises(UnusableKey, match="does not match cluster_cert"):
        Signer.from_files(shared.old_first, stranger.key, include_certificate=False)


def test_signer_knows_its_own_signatures(shared: Shared) -> None:
    old = Signer.from_files(shared.old.cert, shared.old.key, include_certificate=False)
    new = Signer.from_files(shared.new_first, shared.new.key, include_certificate=False)
    header = b"some header bytes"
    signature = old.sign(header)
    assert old.made(header, signature, old.algorithm, b"")
    assert not new.made(header, signature, old.algorithm, b"")
    assert not old.made(header + b"!", signature, old.algorithm, b"")
    assert old.key_id != new.key_id
    assert old.key_id == Signer.from_files(shared.old_first, shared.old.key, include_certificate=False).key_id


def test_a_file_without_a_certificate_is_refused_clearly(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificate here\n")
    with pytest.raises(UnusableKey, match=f"cluster_cert {empty} is not a PEM certificate"):
        Verifier.shared(empty)
    with pytest.raises(UnusableKey, match=f"cluster_ca_cert {empty} is not a PEM certificate"):
        Verifier.pki(empty)
    with pytest.raises(UnusableKey, match="cannot read cluster_ca_cert"):
        Verifier.pki(tmp_path / "missing.pem")


@dataclass(frozen=True)
class Cas:
    old_ca: Issued
    old_cp: Pair
    new_cp: Pair
    new_dp: Pair
    only_old: Path
    both: Path


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> Cas:
    directory = tmp_path_factory.mktemp("ca-rotation")
    old_ca, new_ca = certificates.generate_ca(), certificates.generate_ca(common_name="zonegate cluster CA 2")
    old = write(old_ca, directory, "ca")
    new = write(new_ca, directory, "ca2")
    return Cas(
        old_ca,
        write(certificates.issue_certificate(old_ca, role="control_plane", name="cp-1"), directory, "cp-old"),
        write(certificates.issue_certificate(new_ca, role="control_plane", name="cp-1"), directory, "cp-new"),
        write(certificates.issue_certificate(new_ca, role="data_plane", name="dp-1"), directory, "dp-new"),
        old.cert,
        bundle(directory / "cas.pem", old, new),
    )


def test_pki_bundle_accepts_control_planes_of_either_ca(cas: Cas) -> None:
    by_old = signed(Signer.from_files(cas.old_cp.cert, cas.old_cp.key, include_certificate=True))
    by_new = signed(Signer.from_files(cas.new_cp.cert, cas.new_cp.key, include_certificate=True))
    verifier = Verifier.pki(cas.both)
    assert opens(by_old, verifier) == 3
    assert opens(by_new, verifier) == 3
    only_old = Verifier.pki(cas.only_old)
    assert opens(by_old, only_old) == 3
    with pytest.raises(
        snapshot.SnapshotRejected, match="signer certificate is not issued by cluster_ca_cert"
    ):
        opens(by_new, only_old)


def test_pki_bundle_still_requires_the_control_plane_role(cas: Cas) -> None:
    by_data_plane = signed(Signer.from_files(cas.new_dp.cert, cas.new_dp.key, include_certificate=True))
    with pytest.raises(snapshot.SnapshotRejected, match="control-plane identity"):
        opens(by_data_plane, Verifier.pki(cas.both))


def test_pki_signer_of_an_expired_ca_in_the_bundle_is_refused(cas: Cas, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = certificates.generate_ca(common_name="expired CA", days=1, now=now - dt.timedelta(days=30))
    key = ec.generate_private_key(ec.SECP384R1())
    leaf = (  # valid now, issued by a CA that no longer is (no tool of ours makes one)
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cp-x")]))
        .issuer_name(expired.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(CONTROL_PLANE_IDENTITY)]), critical=False)
        .sign(expired.key, hashes.SHA384())
    )
    cp = write(Issued(leaf, key), tmp_path, "cp-x")
    ca = write(expired, tmp_path, "expired-ca")
    trusted = bundle(tmp_path / "cas.pem", Pair(cas.only_old, cas.old_cp.key), ca)
    with pytest.raises(snapshot.SnapshotRejected, match="CA that issued the signer is not valid now"):
        opens(signed(Signer.from_files(cp.cert, cp.key, include_certificate=True)), Verifier.pki(trusted))


def test_pki_signer_is_its_certificate_too(cas: Cas) -> None:
    """A control plane whose certificate changed re-signs even if the key did not."""
    with_cert = Signer.from_files(cas.old_cp.cert, cas.old_cp.key, include_certificate=True)
    without = Signer.from_files(cas.old_cp.cert, cas.old_cp.key, include_certificate=False)
    header = b"header"
    signature = with_cert.sign(header)
    assert with_cert.made(header, signature, with_cert.algorithm, with_cert.certificate_der)
    assert not without.made(header, signature, with_cert.algorithm, with_cert.certificate_der)
