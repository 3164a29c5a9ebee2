"""TLS on both sides of the proxy.

Downstream: the ssl listeners terminate TLS with the certificate whose SNI matches the
client's server name (exact name first, then a leading wildcard, then a trailing one, as Kong
does), else a default certificate generated once per prefix, as Kong does for its own default.
Upstream: a service with ``protocol: https`` gets a client context honouring ``tls_verify``,
``tls_verify_depth``, ``ca_certificates`` and ``client_certificate``; contexts are shared
between services that ask for the same thing.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Entity = dict[str, Any]


def _load_chain(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """``load_cert_chain`` only reads files: write the PEMs to a private temporary file for the call."""
    fd, name = tempfile.mkstemp(prefix="zg-cert-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(cert_pem.strip() + "\n" + key_pem.strip() + "\n")
        context.load_cert_chain(name)
    finally:
        os.unlink(name)


# -- upstream -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    context: ssl.SSLContext
    verify: bool


_upstream_cache: dict[tuple[Any, ...], UpstreamTls] = {}


def build_upstream_tls(
    service: Entity, certificates: Mapping[str, Entity], ca_certificates: Mapping[str, Entity]
) -> UpstreamTls:
    verify = bool(service.get("tls_verify"))
    depth = service.get("tls_verify_depth")
    ca_ids = tuple(service.get("ca_certificates") or ())
    client = service.get("client_certificate")
    client_cert = certificates.get(client["id"]) if client else None
    key = (
        verify,
        depth,
        tuple(ca_certificates[i]["cert"] for i in ca_ids if i in ca_certificates),
        (client_cert["cert"], client_cert["key"]) if client_cert else None,
    )
    cached = _upstream_cache.get(key)
    if cached is not None:
        return cached
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        if key[2]:
            context.load_verify_locations(cadata="\n".join(key[2]))
        else:
            context.load_default_certs()
        # OpenSSL counts the depth without the leaf; Kong's tls_verify_depth is nginx's, which does too.
        # Python exposes no depth setting, so deeper chains are refused by check after the handshake.
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        _load_chain(context, client_cert["cert"], client_cert["key"])
    result = UpstreamTls(context, verify)
    _upstream_cache[key] = result
    return result


# -- downstream -------------------------------------------------------------------------------------


def ensure_default_certificate(directory: Path) -> tuple[Path, Path]:
    """Kong generates a self-signed default certificate in its prefix on first start; so do we."""
    cert_path, key_path = directory / "default.crt", directory / "default.key"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    # Written to temporary names and renamed, key first: a process that finds the certificate
    # finds its key too, even when several workers start at once.
    key_tmp, cert_tmp = (
        key_path.with_suffix(f".key.{os.getpid()}"),
        cert_path.with_suffix(f".crt.{os.getpid()}"),
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    cert_tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(key_tmp, key_path)
    os.replace(cert_tmp, cert_path)
    return cert_path, key_path


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


class CertificateSelector:
    """SNI -> server context, rebuilt with each config; installed on the listener's context."""

    def __init__(self, default_cert: Path, default_key: Path) -> None:
        self.default = _server_context()
        self.default.load_cert_chain(str(default_cert), str(default_key))
        self.exact: dict[str, ssl.SSLContext] = {}
        self.leading: dict[str, ssl.SSLContext] = {}  # "*.example.com" stored as "example.com"
        self.trailing: dict[str, ssl.SSLContext] = {}  # "example.*" stored as "example"
        # The server side of Python's ssl forgets the client's server name after the handshake;
        # keep it, by SSL object, for the connection to pick up (routes can match on snis).
        self.server_names: dict[int, str] = {}
        self.default.sni_callback = self._select

    def update(self, certificates: tuple[Entity, ...], snis: tuple[Entity, ...]) -> None:
        contexts: dict[str, ssl.SSLContext] = {}
        for certificate in certificates:
            context = _server_context()
            _load_chain(context, certificate["cert"], certificate["key"])
            if certificate.get("cert_alt") and certificate.get("key_alt"):
                _load_chain(context, certificate["cert_alt"], certificate["key_alt"])
            contexts[certificate["id"]] = context
        exact: dict[str, ssl.SSLContext] = {}
        leading: dict[str, ssl.SSLContext] = {}
        trailing: dict[str, ssl.SSLContext] = {}
        for sni in snis:
            found = contexts.get(sni["certificate"]["id"])
            if found is None:
                continue
            context = found
            name = sni["name"].lower()
            if name.startswith("*."):
                leading[name[2:]] = context
            elif name.endswith(".*"):
                trailing[name[:-2]] = context
            else:
                exact[name] = context
        # One assignment each: a handshake in progress sees either the old maps or the new ones.
        self.exact, self.leading, self.trailing = exact, leading, trailing

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        if not server_name:
            return self.default
        name = server_name.lower()
        found = self.exact.get(name)
        if found is not None:
            return found
        _, _, parent = name.partition(".")
        found = self.leading.get(parent)
        if found is not None:
            return found
        head, _, _ = name.rpartition(".")
        trailing = self.trailing.get(head)
        return trailing if trailing is not None else self.default

    def _select(self, sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        if server_name:
            self.server_names[id(sock)] = server_name
        context = self.context_for(server_name)
        if context is not self.default:
            sock.context = context
