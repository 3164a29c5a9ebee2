"""Cluster certificates: the shared cluster certificate, the PKI-mode CA and the node certificates.

Two modes, as in Kong hybrid mode:

- **shared**: ``zonegate hybrid gen-cert`` writes one self-signed EC P-384 certificate with
  CN ``zonegate_clustering`` (Kong's is ``kong_clustering``). Every node uses it as its server
  certificate, its client certificate and its only trust anchor, so it carries what each of those
  uses needs: ``CA:TRUE`` (Go, hence nats-server, and OpenSSL accept it as a root), key usage
  digitalSignature + keyCertSign, and both serverAuth and clientAuth (Go requires the clientAuth
  EKU on client certificates once ``verify`` is on, and routes and leaf nodes dial out with the
  same file). Its SANs name ``zonegate_clustering`` and the loopback names, plus any ``--host``:
  nats-server checks the host name of the peer it dials (routes, leaf remotes), while nodes pin
  the certificate and skip the host-name check (see ``bus/tls.py``).
- **pki**: a CA (``gen-ca``) signs one certificate per node. A node certificate has CN=<name>,
  OU=<role>, and SAN DNS entries for its name **and its role identity**
  (``CONTROL_PLANE_IDENTITY`` or ``DATA_PLANE_IDENTITY``): nats-server's ``verify_and_map`` maps
  the certificate to the first configured user equal to one of its SAN DNS names, so every node
  of a role maps to one NATS user with that role's permissions. A nats-server certificate
  (role ``server``) carries ``SERVER_IDENTITY`` instead, which the route, gateway and leaf-node
  listeners map; no node certificate can open a route, a gateway or a leaf connection.

Invariant: a node name or ``--host`` can never be one of the identity names, or a data plane
could be issued a certificate that maps to the control-plane user.

Computation on certificates, PEM loading with one-line errors, and ``write_pair``, which writes
the files without a window in which the private key is readable by others and never overwrites.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zonegate.bus.subjects import CONTROL_PLANE_IDENTITY, DATA_PLANE_IDENTITY, SERVER_IDENTITY

NodeRole = Literal["control_plane", "data_plane"]
IssuedRole = Literal["control_plane", "data_plane", "server"]
NODE_ROLES: Final[tuple[NodeRole, ...]] = get_args(NodeRole)
ISSUED_ROLES: Final[tuple[IssuedRole, ...]] = get_args(IssuedRole)

CLUSTER_COMMON_NAME: Final = "zonegate_clustering"
DEFAULT_CA_COMMON_NAME: Final = "zonegate cluster CA"
DEFAULT_CERT_DAYS: Final = 3 * 365  # Kong's gen_cert default: 1095 days
DEFAULT_CA_DAYS: Final = 3650
MAX_DAYS: Final = 100 * 365

# Loopback names in the shared certificate: a local stack or a test runs NATS routes and leaf
# links on 127.0.0.1, and nats-server checks the name of the server it dials.
SHARED_DEFAULT_HOSTS: Final = ("localhost", "127.0.0.1", "::1")

ROLE_IDENTITIES: Final[dict[IssuedRole, str]] = {
    "control_plane": CONTROL_PLANE_IDENTITY,
    "data_plane": DATA_PLANE_IDENTITY,
    "server": SERVER_IDENTITY,
}
_IDENTITY_NAMES: Final = frozenset(ROLE_IDENTITIES.values())

# Backdating absorbs small clock differences between the machine that signs and those that verify.
_BACKDATE: Final = dt.timedelta(minutes=5)
_CURVE: Final = ec.SECP384R1
# A DNS name (labels of letters, digits, '-' and '_'; '*' only as a whole first label).
_DNS_RE: Final = re.compile(
    r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$"
)


class CertificateError(ValueError):
    """A certificate or key that cannot be used or made; ``str(error)`` is one line."""


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key, in memory."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


# -- reading ------------------------------------------------------------------------------------------


def certificate_role(cert: x509.Certificate) -> NodeRole | None:
    """The node role named by ``cert``'s role identity (a SAN DNS name), or None.

    This is the role nats-server grants (``verify_and_map`` reads the SAN), so it is the one that
    counts. A certificate naming both roles (``issue_certificate`` never makes one) has none here,
    whatever nats-server would pick. It does not check who issued ``cert`` nor when it expires:
    see ``check_node_certificate``.
    """
    names = set(dns_names(cert))
    roles = [role for role in NODE_ROLES if ROLE_IDENTITIES[role] in names]
    return roles[0] if len(roles) == 1 else None


def certificate_expiry(cert: x509.Certificate) -> dt.datetime:
    """When ``cert`` stops being valid (timezone-aware, UTC)."""
    return cert.not_valid_after_utc


def check_node_certificate(
    cert: x509.Certificate, ca: x509.Certificate, *, now: dt.datetime | None = None
) -> NodeRole:
    """The role of a node certificate that ``ca`` issued and that is valid at ``now``.

    Raises ``CertificateError`` otherwise (for instance: a snapshot signed by a data plane).
    """
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(f"certificate {describe(cert)} is not issued by CA {describe(ca)}") from None
    check_validity(cert, now=now)
    role = certificate_role(cert)
    if role is None:
        raise CertificateError(f"certificate {describe(cert)} carries no zonegate role identity")
    return role


def check_validity(cert: x509.Certificate, *, now: dt.datetime | None = None) -> None:
    """Raise ``CertificateError`` unless ``cert`` is valid at ``now`` (default: now)."""
    moment = now or dt.datetime.now(dt.UTC)
    if moment < cert.not_valid_before_utc:
        start = f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S}"
        raise CertificateError(f"certificate {describe(cert)} is not valid before {start} UTC")
    if moment > cert.not_valid_after_utc:
        end = f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}"
        raise CertificateError(f"certificate {describe(cert)} expired on {end} UTC")


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.DNSName))


def common_name(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def describe(cert: x509.Certificate) -> str:
    name = common_name(cert)
    return f"CN={name}" if name is not None else cert.subject.rfc4514_string() or "(no subject)"


def key_matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """True when ``key`` is the private half of ``cert``'s public key."""
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)


def load_ca(cert_path: Path, key_path: Path) -> Issued:
    """A CA certificate and key from PEM files (for ``gen-cert --ca``); one-line errors."""
    cert = load_certificate_file(cert_path, "--ca")
    key = load_private_key_file(key_path, "--ca-key")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"--ca-key {key_path}: expected an EC private key, got {type(key).__name__}")
    if not key_matches(cert, key):
        raise CertificateError(f"--ca-key {key_path} does not match --ca {cert_path}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CertificateError(f"--ca {cert_path} is not a CA certificate (basicConstraints CA:TRUE missing)")
    check_validity(cert)
    return Issued(cert, key)


def load_certificate_file(path: Path, what: str) -> x509.Certificate:
    data = read_file(path, what)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CertificateError(f"{what} {path} is not a PEM certificate") from None


def load_certificates_file(path: Path, what: str) -> list[x509.Certificate]:
    data = read_file(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise CertificateError(f"{what} {path} is not a PEM certificate")
    return certs


def load_private_key_file(path: Path, what: str) -> PrivateKeyTypes:
    data = read_file(path, what)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CertificateError(f"{what} {path} is encrypted; give an unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(f"{what} {path} is not a PEM private key") from None


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertificateError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise CertificateError(f"{what} {path}: is a directory, expected a PEM file") from None
    except OSError as exc:
        raise CertificateError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None


# -- making -------------------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_days(days: int) -> None:
    if not 1 <= days <= MAX_DAYS:
        raise CertificateError(f"--days must be between 1 and {MAX_DAYS} (got {days})")


def check_host(host: str, what: str = "--host") -> str:
    """``host`` if it is an IP address or a DNS name that is not a role identity."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not _DNS_RE.match(host) or len(host) > 253:
        raise CertificateError(f"{what} {host!r} is neither an IP address nor a DNS name")
    if host.lower().rstrip(".") in _IDENTITY_NAMES:
        # The identity names are what verify_and_map turns into NATS users: only the role may add one.
        raise CertificateError(f"{what} {host!r} is reserved for a role identity")
    return host


def _general_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hosts:
        if host.lower() in seen:
            continue
        seen.add(host.lower())
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int, now: dt.datetime | None
) -> x509.CertificateBuilder:
    start = (now or _now()) - _BACKDATE
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _BACKDATE + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _sign(builder: x509.CertificateBuilder, key: CertificateIssuerPrivateKeyTypes) -> x509.Certificate:
    return builder.sign(key, hashes.SHA384())


def generate_cluster_certificate(
    *, days: int = DEFAULT_CERT_DAYS, hosts: Sequence[str] = (), now: dt.datetime | None = None
) -> Issued:
    """The shared-mode cluster certificate (``zonegate hybrid gen-cert`` without ``--ca``)."""
    _check_days(days)
    extra = [check_host(host) for host in hosts]
    key = ec.generate_private_key(_CURVE())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CLUSTER_COMMON_NAME)])
    builder = (
        _builder(name, name, key, days, now)
        # path_length=0: it may sign nothing but itself; it is a root only so that it can be pinned.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(_general_names([CLUSTER_COMMON_NAME, *SHARED_DEFAULT_HOSTS, *extra])),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
    )
    return Issued(_sign(builder, key), key)


def generate_ca(
    *, common_name: str = DEFAULT_CA_COMMON_NAME, days: int = DEFAULT_CA_DAYS, now: dt.datetime | None = None
) -> Issued:
    """A PKI-mode CA (``zonegate hybrid gen-ca``): signs node and server certificates, nothing else."""
    _check_days(days)
    if not common_name.strip():
        raise CertificateError("--name must not be empty")
    key = ec.generate_private_key(_CURVE())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        _builder(name, name, key, days, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
    )
    return Issued(_sign(builder, key), key)


def issue_certificate(
    ca: Issued,
    *,
    role: IssuedRole,
    name: str,
    hosts: Sequence[str] = (),
    days: int = DEFAULT_CERT_DAYS,
    now: dt.datetime | None = None,
) -> Issued:
    """A PKI-mode certificate for a control plane, a data plane or a nats-server, signed by ``ca``.

    Subject CN=<name>, OU=<role>; SANs: <name>, every ``hosts`` entry, and the role identity.
    Nodes get the clientAuth EKU; a server gets serverAuth and clientAuth, because nats-server
    dials its routes, leaf remotes and gateways with its own certificate.
    """
    if role not in ISSUED_ROLES:
        raise CertificateError(f"--role must be one of {', '.join(ISSUED_ROLES)} (got {role!r})")
    _check_days(days)
    check_host(name, "--name")
    extra = [check_host(host) for host in hosts]
    if ca.cert.not_valid_after_utc < (now or _now()) + dt.timedelta(days=days):
        # It would stop verifying when the CA expires: say so rather than hand out a false date.
        raise CertificateError(
            f"--days {days} would outlive the CA, which expires on {ca.cert.not_valid_after_utc:%Y-%m-%d}; "
            "give fewer --days"
        )
    key = ec.generate_private_key(_CURVE())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )
    usages = (
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if role == "server"
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    builder = (
        _builder(subject, ca.cert.subject, key, days, now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(_general_names([name, *extra, ROLE_IDENTITIES[role]])), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    return Issued(_sign(builder, ca.key), key)


# -- writing ------------------------------------------------------------------------------------------


def write_pair(issued: Issued, cert_path: Path, key_path: Path) -> None:
    """Write the certificate (0644) and its key (0600); refuse if either file exists.

    Both files are created with O_EXCL, so nothing is overwritten even in a race, and the key
    file is created with its final mode, so it is never readable by others, not even briefly.
    On failure nothing is left behind.
    """
    if cert_path.resolve() == key_path.resolve():
        raise CertificateError(f"certificate and key must be two files (both are {cert_path})")
    for path in (cert_path, key_path):
        if os.path.lexists(path):
            raise CertificateError(f"{path} already exists; remove it first or choose another path")
    _create(key_path, issued.key_pem(), 0o600)
    try:
        _create(cert_path, issued.cert_pem(), 0o644)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise


def _create(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileExistsError:
        raise CertificateError(f"{path} already exists; remove it first or choose another path") from None
    except OSError as exc:
        raise CertificateError(f"{path}: cannot create: {exc.strerror or exc}") from None
    try:
        # The umask may have narrowed the mode; set it exactly (still never wider than asked).
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        path.unlink(missing_ok=True)
        raise CertificateError(f"{path}: cannot write: {exc.strerror or exc}") from None
