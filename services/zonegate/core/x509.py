"""Certificate and key checks for the certificates, snis and ca_certificates entities.

Parsing PEM is computation, not I/O, so it belongs in the core; messages follow Kong's.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes


def load_certificate(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def load_private_key(pem: str) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(pem.encode(), password=None)


def certificate_error(pem: str) -> str | None:
    try:
        load_certificate(pem)
    except ValueError as exc:
        return f"invalid certificate: {exc}"
    return None


def private_key_error(pem: str) -> str | None:
    try:
        load_private_key(pem)
    except (ValueError, TypeError) as exc:
        return f"invalid key: {exc}"
    return None


def _public_bytes(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches_certificate(cert_pem: str, key_pem: str) -> bool:
    cert = load_certificate(cert_pem)
    key = load_private_key(key_pem)
    return _public_bytes(cert.public_key()) == _public_bytes(key.public_key())


def key_type(cert_pem: str) -> str:
    """The certificate's key algorithm, compared as Kong compares OpenSSL key type ids."""
    public = load_certificate(cert_pem).public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return "rsa"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return "ec"
    if isinstance(public, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(public, ed448.Ed448PublicKey):
        return "ed448"
    return type(public).__name__


def ca_certificate_error(pem: str, now: dt.datetime | None = None) -> str | None:
    """Kong's order: one certificate only, then not expired, then the CA basic constraint."""
    if pem.count("-----BEGIN CERTIFICATE-----") > 1:
        return "please submit only one certificate at a time"
    cert = load_certificate(pem)
    moment = now or dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc < moment:
        return 'certificate expired, "Not After" time is in the past'
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        return 'certificate does not appear to be a CA because it is missing the "CA" basic constraint'
    return None


def certificate_digest(pem: str) -> str:
    """sha256 of the DER form, hex: Kong's ``cert_digest``."""
    return hashlib.sha256(load_certificate(pem).public_bytes(serialization.Encoding.DER)).hexdigest()


def public_key_error(pem: str) -> str | None:
    try:
        serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        return f"invalid key: {exc}"
    return None
