"""TLS material: certificates (with an optional alternate of the other key type), SNIs, CA certificates."""

from __future__ import annotations

from typing import Any, Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t
from zonegate.core import x509
from zonegate.core.errors import ENTITY_KEY
from zonegate.core.schema import Entity, EntitySchema, all_or_none_of, custom


def _entity_error(message: str | None) -> dict[str, Any]:
    return {ENTITY_KEY: [message]} if message else {}


# Kong runs these three independently, each reporting its own failure.
def check_key_matches(entity: Entity) -> dict[str, Any]:
    cert, key = entity.get("cert"), entity.get("key")
    if cert and key and not x509.key_matches_certificate(cert, key):
        return _entity_error("certificate does not match key")
    return {}


def check_alternate_key_matches(entity: Entity) -> dict[str, Any]:
    cert_alt, key_alt = entity.get("cert_alt"), entity.get("key_alt")
    if cert_alt and key_alt and not x509.key_matches_certificate(cert_alt, key_alt):
        return _entity_error("alternative certificate does not match key")
    return {}


def check_alternate_type(entity: Entity) -> dict[str, Any]:
    cert, cert_alt = entity.get("cert"), entity.get("cert_alt")
    if cert and cert_alt and x509.key_type(cert) == x509.key_type(cert_alt):
        return _entity_error(
            "certificate and alternative certificate need to have different type "
            "(e.g. RSA and ECDSA), the provided certificates were both of the same type"
        )
    return {}


CERTIFICATES: Final = EntitySchema(
    name="certificates",
    description="A certificate and key pair for TLS termination.",
    fields=(
        ("id", t.uuid),
        ("created_at", t.auto_timestamp_s),
        ("updated_at", t.auto_timestamp_s),
        ("cert", t.certificate(required=True)),
        ("key", t.key(required=True)),
        ("cert_alt", t.certificate),
        ("key_alt", t.key),
        ("tags", t.tags),
    ),
    checks=(
        all_or_none_of("cert_alt", "key_alt"),
        custom(("cert", "key"), check_key_matches),
        custom(("cert_alt", "key_alt"), check_alternate_key_matches),
        custom(("cert", "cert_alt"), check_alternate_type),
    ),
)

SNIS: Final = EntitySchema(
    name="snis",
    endpoint_key="name",
    description="A server name served with a certificate.",
    fields=(
        ("id", t.uuid),
        ("created_at", t.auto_timestamp_s),
        ("updated_at", t.auto_timestamp_s),
        ("name", t.wildcard_host(required=True, unique=True)),
        ("tags", t.tags),
        # Kong deletes a certificate's SNIs with it (in its certificates DAO; here in the schema).
        (
            "certificate",
            f.foreign(
                "certificates", required=True, on_delete="cascade", description="The certificate to serve."
            ),
        ),
    ),
)


def check_ca(entity: Entity) -> dict[str, Any]:
    cert = entity.get("cert")
    if not cert:
        return {}
    return _entity_error(x509.ca_certificate_error(cert))


def fill_digest(entity: Entity) -> None:
    entity["cert_digest"] = x509.certificate_digest(entity["cert"])


CA_CERTIFICATES: Final = EntitySchema(
    name="ca_certificates",
    description="A trusted CA certificate, for upstream verification and client certificates.",
    fields=(
        ("id", t.uuid),
        ("created_at", t.auto_timestamp_s),
        ("updated_at", t.auto_timestamp_s),
        ("cert", t.certificate(required=True)),
        ("cert_digest", f.string(unique=True, description="sha256 of the certificate (computed).")),
        ("tags", t.tags),
    ),
    checks=(custom(("cert",), check_ca),),
    normalizers=(fill_digest,),
)
