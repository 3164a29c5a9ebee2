"""Throw-away PKI for the local stack and tests: one CA, a loopback server certificate, client certificates.

Keys are EC P-256 (fast to generate, accepted by nats-server and every TLS stack we use). Private keys are
written with mode 0600 from the start (never world-readable, even for a moment). This is test and
local-stack material only: `zonegate hybrid gen-cert` owns the real cluster certificates.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_SERVER_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
DEFAULT_CLIENT_NAME = "client"
# Backdating covers small clock differences between the process that signs and the one that verifies.
_BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class CertKeyPair:
    """Paths of one PEM certificate and its PEM private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class TlsMaterial:
    """Everything written by `generate_tls_material`, as paths."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server: CertKeyPair
    clients: Mapping[str, CertKeyPair] = field(default_factory=lambda: MappingProxyType({}))

    def client(self, common_name: str = DEFAULT_CLIENT_NAME) -> CertKeyPair:
        try:
            return self.clients[common_name]
        except KeyError:
            raise KeyError(
                f"no client certificate for CN {common_name!r}; have {sorted(self.clients)}"
            ) from None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, data: bytes) -> None:
    # O_CREAT with 0o600 so the key is never readable by others, not even between open and chmod.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)  # the file may have existed with wider bits


def _write_public(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _subject_alt_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


class CertificateAuthority:
    """An in-memory CA that signs server and client certificates."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    @classmethod
    def create(cls, common_name: str = "zonegate test CA", valid_days: int = 30) -> CertificateAuthority:
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{key_path}: expected an EC private key, got {type(key).__name__}")
        return cls(key, cert)

    def write(self, cert_path: Path, key_path: Path) -> None:
        _write_public(cert_path, _cert_pem(self.cert))
        _write_private(key_path, _key_pem(self.key))

    def issue(
        self,
        common_name: str,
        *,
        usages: Sequence[x509.ObjectIdentifier],
        hosts: Sequence[str] = (),
        valid_days: int = 30,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """Sign a leaf certificate for a fresh key; `hosts` become SANs (IP or DNS)."""
        key = _new_key()
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(_subject_alt_names(hosts)), critical=False
            )
        return key, builder.sign(self.key, hashes.SHA256())

    def issue_files(
        self,
        common_name: str,
        cert_path: Path,
        key_path: Path,
        *,
        usages: Sequence[x509.ObjectIdentifier],
        hosts: Sequence[str] = (),
    ) -> CertKeyPair:
        key, cert = self.issue(common_name, usages=usages, hosts=hosts)
        _write_public(cert_path, _cert_pem(cert))
        _write_private(key_path, _key_pem(key))
        return CertKeyPair(cert=cert_path, key=key_path)

    def issue_server_files(
        self, directory: Path, name: str = "server", hosts: Sequence[str] = DEFAULT_SERVER_HOSTS
    ) -> CertKeyPair:
        # clientAuth too: NATS routes, gateways and leaf nodes dial out with the server's own certificate.
        return self.issue_files(
            hosts[0] if hosts else name,
            directory / f"{name}.crt",
            directory / f"{name}.key",
            usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            hosts=hosts,
        )

    def issue_client_files(self, directory: Path, common_name: str) -> CertKeyPair:
        stem = "client-" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in common_name)
        return self.issue_files(
            common_name,
            directory / f"{stem}.crt",
            directory / f"{stem}.key",
            usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
        )


def generate_tls_material(
    directory: Path,
    *,
    client_names: Sequence[str] = (DEFAULT_CLIENT_NAME,),
    server_hosts: Sequence[str] = DEFAULT_SERVER_HOSTS,
    ca_common_name: str = "zonegate test CA",
) -> TlsMaterial:
    """Write a CA, a server certificate for `server_hosts` and one client certificate per CN."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create(ca_common_name)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    ca.write(ca_cert, ca_key)
    server = ca.issue_server_files(directory, hosts=server_hosts)
    clients = {name: ca.issue_client_files(directory, name) for name in client_names}
    return TlsMaterial(
        directory=directory,
        ca_cert=ca_cert,
        ca_key=ca_key,
        server=server,
        clients=MappingProxyType(clients),
    )


def issue_client_certificate(material: TlsMaterial, common_name: str) -> CertKeyPair:
    """Sign one more client certificate with the CA of `material` (written beside the others)."""
    ca = CertificateAuthority.load(material.ca_cert, material.ca_key)
    return ca.issue_client_files(material.directory, common_name)


def client_ssl_context(
    ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """A client context that trusts only `ca_file` and, when given, presents a client certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        if key_file is None:
            raise ValueError("a client certificate needs its key file")
        context.load_cert_chain(str(cert_file), str(key_file))
    return context


def server_ssl_context(
    ca_file: Path, cert_file: Path, key_file: Path, *, require_client_cert: bool = True
) -> ssl.SSLContext:
    """A server context for loopback test servers (the proxy's TLS listener tests, for instance)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_file))
    context.load_cert_chain(str(cert_file), str(key_file))
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return context
