"""Snapshot signatures: the control plane signs, every data plane verifies before applying.

Shared mode: every node holds the one cluster key, so a valid signature proves "from a cluster
member" and stops anything on the bus without the key from injecting a config. PKI mode: the
control plane signs with its own key and ships its certificate; a data plane accepts it only if
the CA issued it, it is valid now, and it carries the control-plane identity (a data plane's
certificate, even a stolen one, cannot sign a config). The signature covers the serialized
header bytes exactly as sent, and the header carries the payload's sha256, so the payload is
covered too without being signed twice.

Trust is a bundle, as in TLS: every certificate of ``cluster_cert`` (shared) or every CA of
``cluster_ca_cert`` (pki) is accepted, so during a rotation a data plane holding [old, new]
takes snapshots signed with either key. A node signs (and presents in TLS) with the **first**
certificate of its own ``cluster_cert``, whose key is ``cluster_cert_key``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)

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
    """The first certificate of a PEM file (the one a node presents and signs with)."""
    return load_certificates(path, what)[0]


def load_certificates(path: Path, what: str = "certificate") -> list[x509.Certificate]:
    """Every certificate of a PEM file (a bundle); at least one, or ``UnusableKey``."""
    data = _read(path, what)  # outside the try: UnusableKey is a ValueError too
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise UnusableKey(f"{what} {path} is not a PEM certificate")
    return certs


def _spki(public: PublicKeyTypes) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True, slots=True)
class Signer:
    key: PrivateKeyTypes
    algorithm: str
    certificate_der: bytes  # shipped in pki mode so data planes can check who signed

    @classmethod
    def from_files(cls, cert_path: Path, key_path: Path, *, include_certificate: bool) -> Signer:
        certs = load_certificates(cert_path, "cluster_cert")
        cert = certs[0]
        try:
            key = serialization.load_pem_private_key(_read(key_path, "cluster_cert_key"), password=None)
        except (ValueError, TypeError):
            raise UnusableKey(f"cluster_cert_key {key_path} is not an unencrypted PEM private key") from None
        public = _spki(key.public_key())
        if public != _spki(cert.public_key()):
            # TLS (OpenSSL) pairs the key with the first certificate of the file too: say which one
            # it belongs to when it is further down a bundle, rather than "does not match".
            position = next((i for i, c in enumerate(certs[1:], 2) if _spki(c.public_key()) == public), 0)
            if position:
                raise UnusableKey(
                    f"cluster_cert_key {key_path} matches certificate {position} of cluster_cert "
                    f"{cert_path}, not the first: put this key's certificate first"
                )
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

    @property
    def key_id(self) -> str:
        """The first 16 hex digits of the sha256 of the public key: names the key in logs and ids."""
        return hashlib.sha256(_spki(self.key.public_key())).hexdigest()[:16]

    def made(self, data: bytes, signature: bytes, algorithm: str, signer_certificate: bytes) -> bool:
        """True when this signer made ``signature``: its key, and (pki) its certificate shipped.

        The publisher asks it of the newest snapshot on the bus: one made with another key (a
        control plane restarted with a rotated key) is signed again with this one."""
        public = self.key.public_key()
        if signer_certificate != self.certificate_der or not isinstance(
            public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
        ):
            return False
        return _signature_ok(public, algorithm, signature, data)


def _fits(public: CertificatePublicKeyTypes, algorithm: str) -> bool:
    return (
        (isinstance(public, ec.EllipticCurvePublicKey) and algorithm in _EC_HASHES)
        or (isinstance(public, rsa.RSAPublicKey) and algorithm == RSA_SHA256)
        or (isinstance(public, ed25519.Ed25519PublicKey) and algorithm == ED25519)
    )


def _signature_ok(public: CertificatePublicKeyTypes, algorithm: str, signature: bytes, data: bytes) -> bool:
    if not _fits(public, algorithm):
        return False
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(_EC_HASHES[algorithm]()))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _verify(
    publics: Sequence[CertificatePublicKeyTypes], algorithm: str, signature: bytes, data: bytes
) -> None:
    """Accept a signature made by any of ``publics`` (the trusted bundle, or the one signer)."""
    fitting = [public for public in publics if _fits(public, algorithm)]
    if not fitting:
        raise SignatureError(f"signature algorithm {algorithm!r} does not fit the signer's key")
    if not any(_signature_ok(public, algorithm, signature, data) for public in fitting):
        raise SignatureError("bad signature")


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Verifier:
    """Checks snapshot signatures for one cluster: shared mode trusts every certificate of
    ``cluster_certs``, pki mode a control-plane certificate issued by any of ``ca_certs``."""

    cluster_certs: Sequence[x509.Certificate] = ()
    ca_certs: Sequence[x509.Certificate] = ()
    _keys: tuple[CertificatePublicKeyTypes, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if bool(self.cluster_certs) == bool(self.ca_certs):
            raise ValueError("a verifier needs either cluster certificates (shared) or CA certificates (pki)")
        object.__setattr__(self, "_keys", tuple(cert.public_key() for cert in self.cluster_certs))

    @classmethod
    def shared(cls, cluster_cert: Path) -> Verifier:
        return cls(cluster_certs=tuple(load_certificates(cluster_cert, "cluster_cert")))

    @classmethod
    def pki(cls, ca_cert: Path) -> Verifier:
        return cls(ca_certs=tuple(load_certificates(ca_cert, "cluster_ca_cert")))

    def verify(self, data: bytes, signature: bytes, algorithm: str, signer_certificate: bytes) -> None:
        if self._keys:
            _verify(self._keys, algorithm, signature, data)
            return
        signer = self._signer(signer_certificate)
        _verify([signer.public_key()], algorithm, signature, data)

    def _signer(self, der: bytes) -> x509.Certificate:
        if not der:
            raise SignatureError("snapshot carries no signer certificate (pki mode needs one)")
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise SignatureError("signer certificate is not a DER certificate") from None
        issuers = [ca for ca in self.ca_certs if _issued_by(cert, ca)]
        if not issuers:
            raise SignatureError("signer certificate is not issued by cluster_ca_cert")
        now = dt.datetime.now(dt.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SignatureError(f"signer certificate is not valid now (until {cert.not_valid_after_utc})")
        if not any(ca.not_valid_before_utc <= now <= ca.not_valid_after_utc for ca in issuers):
            # TLS would refuse a chain through an expired CA too; a bundle may still list one.
            until = max(ca.not_valid_after_utc for ca in issuers)
            raise SignatureError(
                f"the cluster_ca_cert CA that issued the signer is not valid now (until {until})"
            )
        if CONTROL_PLANE_IDENTITY not in _dns_names(cert):
            raise SignatureError(
                f"signer certificate lacks the control-plane identity {CONTROL_PLANE_IDENTITY}"
            )
        return cert
