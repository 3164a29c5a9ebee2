"""``GET /openapi.json``: an OpenAPI 3.1 document of the Admin API, generated from what the app installs.

The document is built from the app's own router, route by route, and from the entity schemas, so
it cannot fall behind the API: every (path, method) the app serves gets exactly one operation, and
a route that cannot be described makes generation fail (``UndocumentedRoute``) rather than go
missing. Entity routes are recognised by their shape (``openapi_operations.classify``), so a new
entity kind is documented with no change here; any other new endpoint needs an entry in
``openapi_endpoints.FIXED``.

Each operation declares every status its handler can answer, with Kong's bodies; a contract test
sends generated requests to every operation and holds the API to the document. Paths also answer
with a trailing slash (``routing``), which the document leaves out. The examples name the entities
of one small config (``billing``, ``pay``, ``ann``...), which the contract test seeds.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, Final

import structlog
from aiohttp import web

from zonegate import __version__
from zonegate.control_plane.admin_api import openapi_schemas as js
from zonegate.control_plane.admin_api.auth import HEADER as TOKEN_HEADER
from zonegate.control_plane.admin_api.context import context
from zonegate.control_plane.admin_api.entities import COLLECTION_PATHS
from zonegate.control_plane.admin_api.errors import json_response
from zonegate.control_plane.admin_api.openapi_endpoints import DOCUMENT_PATH, FIXED
from zonegate.control_plane.admin_api.openapi_operations import (
    QUERY_PARAMETERS,
    SHARED_RESPONSES,
    WRITES,
    Components,
    EntityRoute,
    classify,
    entity_operation,
    entity_parameters,
    shared,
    without_database,
)
from zonegate.control_plane.admin_api.routing import Handler, Routes

log = structlog.get_logger(__name__)

OPENAPI_VERSION: Final = "3.1.0"
PATH: Final = DOCUMENT_PATH

Json = dict[str, Any]

# URL keys of the example config, by kind (``kind:field`` where a nested key is another field).
EXAMPLE_ACL_ID: Final = "6d3d1f2e-8a4b-4c5d-9e6f-7a8b9c0d1e2f"
EXAMPLE_CA_CERTIFICATE_ID: Final = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
KEY_EXAMPLES: Final[dict[str, str]] = {
    "services": "billing",
    "routes": "pay",
    "consumers": "ann",
    "upstreams": "billing.internal",
    "targets": "10.0.0.1:8080",
    "plugins": "billing-auth",
    "keyauth_credentials": "ann-key",
    "basicauth_credentials": "ann-basic",
    "jwt_secrets": "ann-iss",
    "acls": EXAMPLE_ACL_ID,
    "acls:group": "admins",
    "certificates": "billing.example.com",
    "snis": "billing.example.com",
    "ca_certificates": EXAMPLE_CA_CERTIFICATE_ID,
}
# Bodies that create the example config's entities (certificates need real PEM: none here).
CREATE_EXAMPLES: Final[dict[str, Json]] = {
    "services": {"name": "billing", "url": "http://billing.internal:8080/v1", "tags": ["billing"]},
    "routes": {"name": "pay", "paths": ["/pay"], "service": {"name": "billing"}},
    "consumers": {"username": "ann", "custom_id": "ann-1"},
    "upstreams": {"name": "billing.internal"},
    "targets": {"target": "10.0.0.1:8080", "weight": 100, "upstream": {"name": "billing.internal"}},
    "plugins": {"name": "key-auth", "instance_name": "billing-auth", "service": {"name": "billing"}},
    "keyauth_credentials": {"key": "ann-key", "consumer": {"username": "ann"}},
    "basicauth_credentials": {"username": "ann-basic", "password": "s3cret", "consumer": {"username": "ann"}},
    "jwt_secrets": {"key": "ann-iss", "algorithm": "HS256", "consumer": {"username": "ann"}},
    "acls": {"group": "admins", "consumer": {"username": "ann"}},
}


class UndocumentedRoute(Exception):
    """The app serves a route that this module cannot describe: teach it the route."""

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"no OpenAPI description for {method} {path}; describe it in admin_api.openapi")
        self.method = method
        self.path = path


def installed_routes(app: web.Application) -> dict[str, tuple[str, ...]]:
    """Every path the app routes (``{param}`` templates) and its methods; trailing-slash twins folded."""
    table: dict[str, list[str]] = {}
    for resource in app.router.resources():
        table.setdefault(resource.canonical, []).extend(route.method for route in resource)
    folded: dict[str, tuple[str, ...]] = {}
    for path, methods in table.items():
        if path != "/" and path.endswith("/") and sorted(table.get(path[:-1], ())) == sorted(methods):
            continue
        folded[path] = tuple(methods)
    return folded


# -- the document ------------------------------------------------------------------------------------------


def _operation_id(method: str, path: str) -> str:
    """``GET /services/{services}/routes`` -> ``get_services_services_routes``: unique per route."""
    words = [
        part.strip("{}").replace("-", "_").replace(".", "_") for part in path.strip("/").split("/") if part
    ]
    return "_".join([method.lower(), *words]) if words else f"{method.lower()}_root"


def _operation(c: Components, path: str, method: str, route: EntityRoute | None, *, dbless: bool) -> Json:
    fixed = FIXED.get((path, method))
    if fixed is not None:
        tag, build = fixed
        operation = build(c)
    else:
        built = None
        if route is not None:
            built = entity_operation(c, route, method, CREATE_EXAMPLES.get(route.kind))
        if built is None or route is None:
            raise UndocumentedRoute(method, path)
        operation = without_database(c, built, method) if dbless and method in WRITES else built
        tag = COLLECTION_PATHS[route.kind]
    return {"tags": [tag], "operationId": _operation_id(method, path), **operation}


def _path_item(c: Components, path: str, methods: Iterable[str], *, admin_token: bool, dbless: bool) -> Json:
    methods = list(methods)
    route = None if any((path, method) in FIXED for method in methods) else classify(path)
    item: Json = {}
    if route is not None and route.shape != "collection":
        item["parameters"] = entity_parameters(route, KEY_EXAMPLES)
    for method in methods:
        operation = _operation(c, path, method, route, dbless=dbless)
        if admin_token:
            operation["responses"]["401"] = shared("Unauthorized")
        item[method.lower()] = operation
    return item


def build_document(
    routes: Mapping[str, Iterable[str]], *, admin_token: bool = False, dbless: bool = False
) -> Json:
    """The OpenAPI document of these routes (see ``installed_routes``).

    ``admin_token``: every call needs the token header (and may answer 401). ``dbless``: a node
    without a database, where entity writes are refused (405).
    """
    c = Components()
    c.schemas.update(js.error_components())
    paths = {
        path: _path_item(c, path, methods, admin_token=admin_token, dbless=dbless)
        for path, methods in routes.items()
    }
    document: Json = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Zonegate Admin API",
            "version": __version__,
            "description": (
                "Kong's Admin API: Kong's paths, bodies, statuses and error shapes. Writes take JSON "
                "or form bodies (form values are typed from the schema, as Kong does). Every path "
                "also answers with a trailing slash; a method a path does not list answers 405 "
                '{"message": "Method not allowed"}.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(c.schemas.items())),
            "responses": SHARED_RESPONSES,
            "parameters": QUERY_PARAMETERS,
        },
    }
    if admin_token:
        document["components"]["securitySchemes"] = {
            "adminToken": {"type": "apiKey", "in": "header", "name": TOKEN_HEADER}
        }
        document["security"] = [{"adminToken": []}]
    # Shared constants (error bodies, parameters) went in by reference: the caller gets its own copy.
    return copy.deepcopy(document)


def register(routes: Routes) -> None:
    routes.add(PATH, {"GET": _document_handler()})


def _document_handler() -> Handler:
    """The document is built on the first request, once the route table is complete, then kept."""
    built: list[Json] = []

    async def handler(request: web.Request) -> web.Response:
        if not built:
            settings = context(request).settings
            document = build_document(
                installed_routes(request.app),
                admin_token=bool(settings.admin_token),
                dbless=settings.database == "off",
            )
            built.append(document)
            log.debug(
                "admin.openapi_built",
                paths=len(document["paths"]),
                schemas=len(document["components"]["schemas"]),
            )
        return json_response(built[0])

    return handler
