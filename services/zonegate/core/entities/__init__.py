"""Every entity kind, in dependency order, and how declarative files nest them.

The order matters: a kind appears after every kind it references, so loading, id generation
and foreign-key resolution can walk it front to back.
"""

from __future__ import annotations

from typing import Final

from zonegate.core.entities import (
    certificates,
    consumers,
    credentials,
    plugins,
    routes,
    services,
    targets,
    upstreams,
)
from zonegate.core.schema import EntitySchema

SCHEMAS: Final[tuple[EntitySchema, ...]] = (
    certificates.CERTIFICATES,
    certificates.SNIS,
    certificates.CA_CERTIFICATES,
    services.SCHEMA,
    routes.SCHEMA,
    consumers.SCHEMA,
    upstreams.SCHEMA,
    targets.SCHEMA,
    plugins.SCHEMA,
    credentials.KEYAUTH,
    credentials.BASICAUTH,
    credentials.JWT,
    credentials.ACLS,
)

BY_NAME: Final[dict[str, EntitySchema]] = {schema.name: schema for schema in SCHEMAS}
KINDS: Final[tuple[str, ...]] = tuple(BY_NAME)

# parent kind -> ((child kind, the child's foreign key to the parent), ...), as Kong nests them.
NESTED: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "certificates": (("snis", "certificate"),),
    "services": (("routes", "service"), ("plugins", "service")),
    "routes": (("plugins", "route"),),
    "consumers": (
        ("plugins", "consumer"),
        ("keyauth_credentials", "consumer"),
        ("basicauth_credentials", "consumer"),
        ("jwt_secrets", "consumer"),
        ("acls", "consumer"),
    ),
    "upstreams": (("targets", "upstream"),),
}


def schema_for(kind: str) -> EntitySchema:
    return BY_NAME[kind]
