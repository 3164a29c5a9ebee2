"""The snapshot codec and its signatures, with real keys: what a data plane accepts and refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from zonegate.bus import snapshot
from zonegate.bus.certificates import Issued, generate_ca, generate_cluster_certificate, issue_certificate
from zonegate.bus.signing import Signer, Verifier
from zonegate.bus.v1 import bus_pb2
from zonegate.core import declarative
from zonegate.core.canonical import config_hash
from zonegate.core.config import Config

CONFIG_TEXT = """
_format_version: "3.0"
services:
  - name: orders
    url: http://orders.internal:8080
    routes:
      - name: orders-route
        paths: [/orders]
    plugins:
      - name: cors
consumers:
  - username: alice
"""


def _write(directory: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(issued.cert_pem())
    key.write_bytes(issued.key_pem())
    return cert, key


@pytest.fixture(scope="module")
def config() -> Config:
    return declarative.loads(CONFIG_TEXT)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Verifier]:
    directory = tmp_path_factory.mktemp("shared")
    cert, key = _write(directory, "cluster", generate_cluster_certificate())
    return Signer.from_files(cert, key, include_certificate=False), Verifier.shared(cert)


def _encode(
    config: Config, signer: Signer, *, version: int = 7, inline_limit: int = 1 << 20
) -> snapshot.EncodedSnapshot:
    return snapshot.encode(
        config,
        version=version,
        cluster="default",
        group="default",
        signer=signer,
        signer_node="cp-1",
        plugin_versions={"cors": "0.1.0"},
        inline_limit=inline_limit,
        bucket="ZG_SNAPSHOTS_default",
    )


def test_round_trip(config: Config, shared: tuple[Signer, Verifier]) -> None:
    signer, verifier = shared
    encoded = _encode(config, signer)
    assert not encoded.in_object_store
    opened = snapshot.open_message(encoded.message, verifier, cluster="default", group="default")
    assert opened.version == 7
    assert opened.config_hash == config_hash(config).config_hash
    assert dict(opened.header.plugins) == {"cors": "0.1.0"}
    assert snapshot.decode_payload(opened, opened.inline_payload) == config


def test_large_payload_goes_by_reference(config: Config, shared: tuple[Signer, Verifier]) -> None:
    signer, verifier = shared
    encoded = _encode(config, signer, inline_limit=10)
    assert encoded.in_object_store
    opened = snapshot.open_message(encoded.message, verifier, cluster="default", group="default")
    assert opened.inline_payload == b""
    assert opened.object_reference == ("ZG_SNAPSHOTS_default", encoded.header.object.name)
    assert snapshot.decode_payload(opened, encoded.payload) == config


def test_other_cluster_key_is_refused(
    config: Config, shared: tuple[Signer, Verifier], tmp_path: Path
) -> None:
    cert, key = _write(tmp_path, "intruder", generate_cluster_certificate())
    intruder = Signer.from_files(cert, key, include_certificate=False)
    _, verifier = shared
    with pytest.raises(snapshot.SnapshotRejected, match="signature check failed: bad signature"):
        snapshot.open_message(_encode(config, intruder).message, verifier, cluster="default", group="default")


def test_tampered_header_is_refused(config: Config, shared: tuple[Signer, Verifier]) -> None:
    signer, verifier = shared
    signed = bus_pb2.SignedSnapshot.FromString(_encode(config, signer).message)
    header = bus_pb2.SnapshotHeader.FromString(signed.header)
    header.version = 99  # a replayed snapshot dressed up as newer
    signed.header = header.SerializeToString()
    with pytest.raises(snapshot.SnapshotRejected, match="bad signature"):
        snapshot.open_message(signed.SerializeToString(), verifier, cluster="default", group="default")


def test_truncated_and_altered_payloads_are_refused(config: Config, shared: tuple[Signer, Verifier]) -> None:
    signer, verifier = shared
    encoded = _encode(config, signer)
    opened = snapshot.open_message(encoded.message, verifier, cluster="default", group="default")
    with pytest.raises(snapshot.SnapshotRejected, match="truncated"):
        snapshot.decode_payload(opened, opened.inline_payload[:-5])
    altered = bytes([opened.inline_payload[0] ^ 1]) + opened.inline_payload[1:]
    with pytest.raises(snapshot.SnapshotRejected, match="digest"):
        snapshot.decode_payload(opened, altered)


def test_garbage_and_wrong_cluster(config: Config, shared: tuple[Signer, Verifier]) -> None:
    signer, verifier = shared
    with pytest.raises(snapshot.SnapshotRejected, match="not a snapshot"):
        snapshot.open_message(b"\xff\xff\xff garbage", verifier, cluster="default", group="default")
    with pytest.raises(snapshot.SnapshotRejected, match="cluster 'default'"):
        snapshot.open_message(_encode(config, signer).message, verifier, cluster="eu", group="default")


def test_inconsistent_config_is_never_encoded(config: Config, shared: tuple[Signer, Verifier]) -> None:
    signer, _ = shared
    routes = [
        dict(route, service={"id": "00000000-0000-4000-8000-000000000000"}) for route in config.of("routes")
    ]
    broken = Config.build({**config.entities, "routes": routes})
    with pytest.raises(snapshot.SnapshotRejected, match="does not exist"):
        _encode(broken, signer)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca = generate_ca()
    ca_cert, _ = _write(directory, "ca", ca)
    cp_cert, cp_key = _write(directory, "cp", issue_certificate(ca, role="control_plane", name="cp-1"))
    dp_cert, dp_key = _write(directory, "dp", issue_certificate(ca, role="data_plane", name="dp-1"))
    other_ca = generate_ca(common_name="other")
    rogue_cert, rogue_key = _write(
        directory, "rogue", issue_certificate(other_ca, role="control_plane", name="cp-x")
    )
    return {
        "ca": ca_cert,
        "cp_cert": cp_cert,
        "cp_key": cp_key,
        "dp_cert": dp_cert,
        "dp_key": dp_key,
        "rogue_cert": rogue_cert,
        "rogue_key": rogue_key,
    }


def test_pki_control_plane_signature_is_accepted(config: Config, pki: dict[str, Path]) -> None:
    signer = Signer.from_files(pki["cp_cert"], pki["cp_key"], include_certificate=True)
    opened = snapshot.open_message(
        _encode(config, signer).message, Verifier.pki(pki["ca"]), cluster="default", group="default"
    )
    assert opened.version == 7


def test_pki_data_plane_certificate_cannot_sign(config: Config, pki: dict[str, Path]) -> None:
    signer = Signer.from_files(pki["dp_cert"], pki["dp_key"], include_certificate=True)
    with pytest.raises(snapshot.SnapshotRejected, match="control-plane identity"):
        snapshot.open_message(
            _encode(config, signer).message, Verifier.pki(pki["ca"]), cluster="default", group="default"
        )


def test_pki_certificate_from_another_ca_is_refused(config: Config, pki: dict[str, Path]) -> None:
    signer = Signer.from_files(pki["rogue_cert"], pki["rogue_key"], include_certificate=True)
    with pytest.raises(snapshot.SnapshotRejected, match="not issued by cluster_ca_cert"):
        snapshot.open_message(
            _encode(config, signer).message, Verifier.pki(pki["ca"]), cluster="default", group="default"
        )


def test_pki_snapshot_without_certificate_is_refused(config: Config, pki: dict[str, Path]) -> None:
    signer = Signer.from_files(pki["cp_cert"], pki["cp_key"], include_certificate=False)
    with pytest.raises(snapshot.SnapshotRejected, match="no signer certificate"):
        snapshot.open_message(
            _encode(config, signer).message, Verifier.pki(pki["ca"]), cluster="default", group="default"
        )


def test_key_that_does_not_match_its_certificate(pki: dict[str, Path]) -> None:
    from zonegate.bus.signing import UnusableKey

    with pytest.raises(UnusableKey, match="does not match"):
        Signer.from_files(pki["cp_cert"], pki["dp_key"], include_certificate=True)
