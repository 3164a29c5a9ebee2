"""Snapshot signatures: the control plane signs, every data plane verifies before applying.

Shared mode: every node holds the one cluster key, so a valid signature proves "from a cluster
member" and stops anything on the bus without the key from injecting a config. PKI mode: the
control plane signs with its own key and ships its certificate; a data plane accepts it only if
the CA issued it, it is valid now, and it carries the control-plane identity (a data plane's
certificate, even a stolen one, cannot sign a config). The signature covers the serialized
header bytes exactly as sent, and the header carries the payload's sha256, so the payload is
covered too without being signed twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PrivateKeyTypes

from zonegate.bus.subjects import CONTROL_PLANE_IDENTITY

ECDSA_SHA256: Final = "ecdsa-sha256"
ECDSA_SHA384: Final = "ecdsa-sha384"
ECDSA_SHA512: Final = "ecdsa-sha512"
RSA_SHA256: Final = "rsa-pkcs1v15-sha256"
ED25519: Final = "ed25519"

_EC_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    ECDSA_SHA256: hashes.SHA256,
    ECDSA_SHA384: hashes.SHA384,
    ECDSA_SHA512: hashes.SHA512,
}


class SignatureError(Exception):
    """A snapshot whose signature does not verify, or a signer that is not allowed to sign."""


class UnusableKey(ValueError):
    """A key or certificate file that cannot be used for signing (one clear line)."""


def _ec_algorithm(key_size: int) -> str:
    if key_size <= 256:
        return ECDSA_SHA256
    if key_size <= 384:
        return ECDSA_SHA384
    return ECDSA_SHA512


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UnusableKey(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def load_certificate(path: Path, what: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path, what))
    except ValueError:
        raise UnusableKey(f"{what} {path} is not a PEM certificate") from None


@dataclass(frozen=True, slots=True)
class Signer:
    key: PrivateKeyTypes
    algorithm: str
    certificate_der: bytes  # shipped in pki mode so data planes can check who signed

    @classmethod
    def from_files(cls, cert_path: Path, key_path: Path, *, include_certificate: bool) -> Signer:
        cert = load_certificate(cert_path, "cluster_cert")
        try:
            key = serialization.load_pem_private_key(_read(key_path, "cluster_cert_key"), password=None)
        except (ValueError, TypeError):
            raise UnusableKey(f"cluster_cert_key {key_path} is not an unencrypted PEM private key") from None
        public = key.public_key()
        if public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise UnusableKey(f"cluster_cert_key {key_path} does not match cluster_cert {cert_path}")
        if isinstance(key, ec.EllipticCurvePrivateKey):
            algorithm = _ec_algorithm(key.curve.key_size)
        elif isinstance(key, rsa.RSAPrivateKey):
            algorithm = RSA_SHA256
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            algorithm = ED25519
        else:
            raise UnusableKey(f"cluster_cert_key {key_path}: unsupported key type {type(key).__name__}")
        der = cert.public_bytes(serialization.Encoding.DER) if include_certificate else b""
        return cls(key, algorithm, der)

    def sign(self, data: bytes) -> bytes:
        key = self.key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(_EC_HASHES[self.algorithm]()))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        raise SignatureError(f"cannot sign with a {type(key).__name__}")


def _verify(public: CertificatePublicKeyTypes, algorithm: str, signature: bytes, data: bytes) -> None:
    try:
        if isinstance(public, ec.EllipticCurvePublicKey) and algorithm in _EC_HASHES:
            public.verify(signature, data, ec.ECDSA(_EC_HASHES[algorithm]()))
        elif isinstance(public, rsa.RSAPublicKey) and algorithm == RSA_SHA256:
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public, ed25519.Ed25519PublicKey) and algorithm == ED25519:
            public.verify(signature, data)
        else:
            raise SignatureError(f"signature algorithm {algorithm!r} does not fit the signer's key")
    except InvalidSignature:
        raise SignatureError("bad signature") from None


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


class Verifier:
    """Checks snapshot signatures for one cluster (shared or pki mode)."""

    def __init__(self, *, cluster_cert: x509.Certificate | None, ca_cert: x509.Certificate | None) -> None:
        if (cluster_cert is None) == (ca_cert is None):
            raise ValueError("a verifier needs exactly one of cluster_cert (shared) or ca_cert (pki)")
        self._cluster_cert = cluster_cert
        self._ca = ca_cert

    @classmethod
    def shared(cls, cluster_cert: Path) -> Verifier:
        return cls(cluster_cert=load_certificate(cluster_cert, "cluster_cert"), ca_cert=None)

    @classmethod
    def pki(cls, ca_cert: Path) -> Verifier:
        return cls(cluster_cert=None, ca_cert=load_certificate(ca_cert, "cluster_ca_cert"))

    def verify(self, data: bytes, signature: bytes, algorithm: str, signer_certificate: bytes) -> None:
        if self._cluster_cert is not None:
            _verify(self._cluster_cert.public_key(), algorithm, signature, data)
            return
        assert self._ca is not None
        signer = self._signer(signer_certificate)
        _verify(signer.public_key(), algorithm, signature, data)

    def _signer(self, der: bytes) -> x509.Certificate:
        assert self._ca is not None
        if not der:
            raise SignatureError("snapshot carries no signer certificate (pki mode needs one)")
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise SignatureError("signer certificate is not a DER certificate") from None
        try:
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature):
            raise SignatureError("signer certificate is not issued by cluster_ca_cert") from None
        now = dt.datetime.now(dt.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SignatureError(f"signer certificate is not valid now (until {cert.not_valid_after_utc})")
        if CONTROL_PLANE_IDENTITY not in _dns_names(cert):
            raise SignatureError(
                f"signer certificate lacks the control-plane identity {CONTROL_PLANE_IDENTITY}"
            )
        return cert
