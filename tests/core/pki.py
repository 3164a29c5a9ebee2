"""Small generators of real PEM material for the certificate entity tests.

Everything is made in memory with ``cryptography``; keys are small (EC P-256, RSA 2048) so a
whole test module builds its material in well under a second.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pem:
    """A certificate and its private key, both PEM text."""

    cert: str
    key: str


def _key_pem(key: CertificateIssuerPrivateKeyTypes) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_key_pem(key: CertificateIssuerPrivateKeyTypes) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def self_signed(
    key: CertificateIssuerPrivateKeyTypes,
    *,
    common_name: str = "example.test",
    ca: bool = False,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    basic_constraints: bool = True,
) -> Pem:
    """A self-signed certificate for ``key``; ``ca`` sets BasicConstraints(ca=True)."""
    now = dt.datetime.now(dt.UTC)
    start = not_before or now - dt.timedelta(days=1)
    end = not_after or now + dt.timedelta(days=30)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(key, algorithm)
    return Pem(cert=cert.public_bytes(serialization.Encoding.PEM).decode(), key=_key_pem(key))


def ec_leaf(common_name: str = "ec.example.test") -> Pem:
    return self_signed(ec_key(), common_name=common_name)


def rsa_leaf(common_name: str = "rsa.example.test") -> Pem:
    return self_signed(rsa_key(), common_name=common_name)


def ed25519_leaf(common_name: str = "ed.example.test") -> Pem:
    return self_signed(ed25519_key(), common_name=common_name)


def ca_cert(common_name: str = "Test CA") -> Pem:
    return self_signed(ec_key(), common_name=common_name, ca=True)


def expired_ca(common_name: str = "Expired CA") -> Pem:
    now = dt.datetime.now(dt.UTC)
    return self_signed(
        ec_key(),
        common_name=common_name,
        ca=True,
        not_before=now - dt.timedelta(days=60),
        not_after=now - dt.timedelta(days=30),
    )


def expired_leaf(common_name: str = "expired.example.test") -> Pem:
    """Expired and not a CA: fails both ca_certificates rules."""
    now = dt.datetime.now(dt.UTC)
    return self_signed(
        ec_key(),
        common_name=common_name,
        not_before=now - dt.timedelta(days=60),
        not_after=now - dt.timedelta(days=30),
    )
