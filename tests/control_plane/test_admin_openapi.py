"""``GET /openapi.json``: a valid OpenAPI document, complete, and true to what the Admin API answers.

The contract test runs schemathesis against a real Admin API over real PostgreSQL: for every
operation it sends generated requests (valid and invalid bodies, query strings and path keys,
JSON and form-encoded) and holds each answer to the document: never a 5xx, a status the
operation declares, a JSON body valid against the declared schema (checked with ``jsonschema``).
Path keys are drawn partly from the example config (the entities the document's examples name),
which every operation starts from, so that the run reaches real entities and does not depend on
test order. The API runs on its own event loop in a thread: schemathesis sends blocking requests.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from schemathesis.config import SchemathesisConfig

from core import pki
from zonegate.control_plane.admin_api import build_app
from zonegate.control_plane.admin_api.openapi import (
    CREATE_EXAMPLES,
    EXAMPLE_ACL_ID,
    EXAMPLE_CA_CERTIFICATE_ID,
    KEY_EXAMPLES,
    UndocumentedRoute,
    build_document,
    installed_routes,
)
from zonegate.control_plane.store import Store
from zonegate.core import declarative
from zonegate.core.entities import BY_NAME
from zonegate.settings import Settings

from . import admin_fixtures
from .admin_fixtures import NODE_ID, Admin, make_settings

admin = admin_fixtures.admin

DOCUMENT_URI = "urn:zonegate:admin-openapi"
# Generated requests per operation, on top of the document's examples. With about 190 operations
# this is some 3,000 requests in 20-30 s on a small machine.
MAX_EXAMPLES = 12
SEED = 20251126
CERTIFICATE_ID = "3f0e8a52-6c1d-4b7e-9a25-d4c3b2a1f0e9"
SNI_ID = "7b6a5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"


# -- holding answers to the document ---------------------------------------------------------------------


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def content_type(headers: Mapping[str, Any]) -> str:
    """The media type, from aiohttp's headers or schemathesis' (lower-case names, lists of values)."""
    value = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    value = value[0] if isinstance(value, list) else value
    return str(value).split(";", 1)[0].strip()


class Contract:
    """The document, and the check that an answer is one it declares."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, resource)

    def _response(self, path: str, method: str, status: int) -> tuple[dict[str, Any], str]:
        """The declared response for ``status`` and its JSON pointer in the document."""
        declared = self.document["paths"][path][method.lower()]["responses"]
        assert str(status) in declared, f"{method} {path} answered {status}; declared: {sorted(declared)}"
        response = declared[str(status)]
        if "$ref" in response:
            name = response["$ref"].rsplit("/", 1)[1]
            return self.document["components"]["responses"][name], _pointer("components", "responses", name)
        return response, _pointer("paths", path, method.lower(), "responses", str(status))

    def check(self, path: str, method: str, status: int, media: str, text: str) -> None:
        """``path`` is the template (``/services/{services}``) of the operation that answered."""
        assert status < 500, f"{method} {path} answered {status}: {text[:500]}"
        response, pointer = self._response(path, method, status)
        if "content" not in response:
            assert text == "", f"{method} {path} {status} declares no body but sent {text[:200]!r}"
            return
        assert media == "application/json", (method, path, status, media)
        validator = Draft202012Validator(
            {"$ref": f"{DOCUMENT_URI}#/{pointer}/content/application~1json/schema"},
            registry=self.registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        errors = sorted(validator.iter_errors(json.loads(text)), key=lambda e: list(e.absolute_path))
        assert not errors, f"{method} {path} {status}: {errors[0].message} at {list(errors[0].absolute_path)}"


# -- the document and the example config ------------------------------------------------------------------


def expected_document(**variant: bool) -> dict[str, Any]:
    """The document of the control plane's app, as ``GET /openapi.json`` must serve it.

    Built at import, as schemathesis collects one test per operation from it (its schemas built
    by fixtures do not run on this pytest); describing the routes never touches the store.
    """
    app = build_app(cast(Store, None), make_settings(Path("/nonexistent")), node_id=NODE_ID)
    return build_document(installed_routes(app), **variant)


def seed_document(certificate: pki.Pem, ca: pki.Pem) -> dict[str, Any]:
    """The config whose entities the document's examples name (``billing``, ``pay``, ``ann``...)."""

    def example(kind: str, *drop: str) -> dict[str, Any]:
        return {k: v for k, v in CREATE_EXAMPLES[kind].items() if k not in drop}

    return {
        "_format_version": "3.0",
        "certificates": [
            {
                # Fixed ids: the key material is new every run, the requests generated are not.
                "id": CERTIFICATE_ID,
                "cert": certificate.cert,
                "key": certificate.key,
                "snis": [{"id": SNI_ID, "name": KEY_EXAMPLES["snis"]}],
            }
        ],
        "ca_certificates": [{"id": EXAMPLE_CA_CERTIFICATE_ID, "cert": ca.cert}],
        "services": [
            {
                **example("services"),
                "routes": [example("routes", "service")],
                "plugins": [example("plugins", "service")],
            }
        ],
        "upstreams": [{**example("upstreams"), "targets": [example("targets", "upstream")]}],
        "consumers": [
            {
                **example("consumers"),
                "keyauth_credentials": [example("keyauth_credentials", "consumer")],
                "basicauth_credentials": [example("basicauth_credentials", "consumer")],
                # Declarative files carry JWT secrets: a generated one could never be read back.
                "jwt_secrets": [{**example("jwt_secrets", "consumer"), "secret": "ann-jwt-secret"}],
                "acls": [{**example("acls", "consumer"), "id": EXAMPLE_ACL_ID}],
            }
        ],
    }


DOCUMENT = expected_document()
SEED_CONFIG = seed_document(pki.ec_leaf(KEY_EXAMPLES["certificates"]), pki.ca_cert())


def known_keys() -> dict[str, list[str]]:
    """URL keys of the example config's entities, by path parameter: ids, names, and the examples."""
    keys: dict[str, set[str]] = {}
    for kind, entities in declarative.load(SEED_CONFIG).entities.items():
        keys[kind] = {entity["id"] for entity in entities}
    for name, example in KEY_EXAMPLES.items():
        keys.setdefault(name.split(":", 1)[0], set()).add(example)
    keys["tags"] = {"billing"}
    keys["name"] = {*BY_NAME, "key-auth", "plugins"}  # /schemas/{name}: entities and plugins
    return {kind: sorted(values) for kind, values in keys.items()}


def schemathesis_config() -> SchemathesisConfig:
    """Fixed seed and example count; half of the path keys name entities of the example config."""
    keys = known_keys()
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            # The coverage phase sends thousands of boundary values per operation: too slow to gate CI.
            "phases": {"coverage": {"enabled": False}},
            "dictionaries": {kind: {"values": values} for kind, values in keys.items()},
            "parameters": {f"path.{kind}": {"dictionary": kind, "probability": 0.5} for kind in keys},
        }
    )


# -- the document, statically ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [{}, {"admin_token": True}, {"dbless": True}])
def test_the_document_is_valid_openapi_3_1(variant: dict[str, bool]) -> None:
    document = expected_document(**variant)

    validate_openapi(document)
    assert document["openapi"] == "3.1.0"
    operation_ids = [op["operationId"] for item in document["paths"].values() for op in _operations(item)]
    assert len(operation_ids) == len(set(operation_ids))


def _operations(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [op for method, op in item.items() if method != "parameters"]


def test_every_route_the_app_installs_is_documented_and_nothing_else() -> None:
    app = build_app(cast(Store, None), make_settings(Path("/nonexistent")), node_id=NODE_ID)
    installed = {
        # Each path is installed with and without a trailing slash (``routing``).
        (resource.canonical.rstrip("/") or "/", route.method)
        for resource in app.router.resources()
        for route in resource
    }
    documented = {
        (path, method.upper())
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method != "parameters"
    }

    assert installed == documented
    assert ("/openapi.json", "GET") in documented
    assert ("/services/{services}/routes/{routes}", "PATCH") in documented


def test_a_route_nobody_described_stops_generation() -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.Response()

    app = build_app(cast(Store, None), make_settings(Path("/nonexistent")), node_id=NODE_ID)
    app.router.add_route("GET", "/widgets", handler)
    with pytest.raises(UndocumentedRoute, match="GET /widgets"):
        build_document(installed_routes(app))

    routes = {**installed_routes(build_app(cast(Store, None), make_settings(Path("/x")), node_id=NODE_ID))}
    routes["/services"] = (*routes["/services"], "DELETE")
    with pytest.raises(UndocumentedRoute, match="DELETE /services"):
        build_document(routes)


def _component(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = DOCUMENT["components"]["schemas"][name]
    return schema


def test_request_bodies_follow_the_entity_schemas() -> None:
    service_create = _component("ServiceCreate")
    # The url shorthand sets the host: one of the two is needed.
    assert "required" not in service_create
    assert service_create["anyOf"] == [{"required": ["host"]}, {"required": ["url"]}]
    assert service_create["properties"]["protocol"]["enum"][:2] == ["grpc", "grpcs"]
    assert service_create["properties"]["retries"] == {
        "type": ["integer", "null"],
        "minimum": 0,
        "maximum": 32767,
        "description": "Retries on connection failure.",
        "default": 5,
    }
    assert service_create["additionalProperties"] is False
    assert "created_at" not in service_create["properties"]
    # A foreign key by id, or by a unique field of the referenced entity.
    route_service = _component("RouteCreate")["properties"]["service"]
    assert route_service["type"] == ["object", "null"]
    assert set(route_service["properties"]) == {"id", "name"}
    assert _component("ConsumerCreate")["anyOf"] == [{"required": ["custom_id"]}, {"required": ["username"]}]
    # Under its upstream a target needs no upstream; PATCH needs nothing.
    assert _component("TargetCreateUnderUpstream")["required"] == ["target"]
    assert (
        "required" not in _component("ServicePatch") and "id" not in _component("ServicePatch")["properties"]
    )
    # PUT /upstreams/{name} names the upstream in the URL.
    assert "required" not in _component("UpstreamPut")
    assert _component("BasicauthCredentialCreate")["required"] == ["consumer", "username", "password"]


def test_answers_list_every_field_null_unless_required() -> None:
    service = _component("Service")

    assert service["required"] == list(service["properties"])
    assert service["properties"]["id"]["type"] == "string"
    assert service["properties"]["protocol"]["type"] == "string"
    assert service["properties"]["retries"]["type"] == ["integer", "null"]
    assert _component("Certificate")["properties"]["snis"] == {"type": "array", "items": {"type": "string"}}
    assert "created_at" not in _component("ServiceRecord")["properties"]
    assert _component("ServicePage")["required"] == ["data", "next"]


def test_errors_have_kongs_shapes() -> None:
    violation = _component("SchemaViolationError")

    assert violation["properties"]["code"] == {"const": 2}
    assert violation["properties"]["name"] == {"const": "schema violation"}
    assert violation["required"] == ["code", "name", "message", "fields"]
    create = DOCUMENT["paths"]["/services"]["post"]["responses"]
    assert set(create) == {"201", "400", "409", "413", "415", "503"}
    assert {"$ref": "#/components/schemas/SchemaViolationError"} in create["400"]["content"][
        "application/json"
    ]["schema"]["anyOf"]
    assert DOCUMENT["paths"]["/services/{services}"]["get"]["responses"]["404"] == {
        "$ref": "#/components/responses/NotFound"
    }
    # Kong refuses to delete through a foreign key.
    assert "405" in DOCUMENT["paths"]["/routes/{routes}/service"]["delete"]["responses"]


def test_with_an_admin_token_every_operation_may_answer_401() -> None:
    document = expected_document(admin_token=True)

    assert document["security"] == [{"adminToken": []}]
    assert document["components"]["securitySchemes"]["adminToken"]["name"] == "Zonegate-Admin-Token"
    assert all("401" in op["responses"] for item in document["paths"].values() for op in _operations(item))


def test_without_a_database_entity_writes_answer_405() -> None:
    paths = expected_document(dbless=True)["paths"]

    create = paths["/services"]["post"]["responses"]
    assert "201" not in create and "409" not in create
    assert create["405"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OperationUnsupportedError"
    }
    assert "204" in paths["/services/{services}"]["delete"]["responses"]  # nothing there: still 204
    assert "200" in paths["/services/{services}"]["get"]["responses"]
    assert "201" in paths["/config"]["post"]["responses"]


# -- the document against the API -------------------------------------------------------------------------


async def test_the_app_serves_the_generated_document(admin: Admin) -> None:
    reply = await admin.get("/openapi.json")
    again = await admin.get("/openapi.json")

    assert reply.status == 200 and content_type(reply.headers) == "application/json"
    assert reply.body == DOCUMENT
    assert again.body == reply.body
    assert "/openapi.json" in (await admin.get("/endpoints")).body["data"]


async def test_the_create_examples_create_their_entities(admin: Admin) -> None:
    contract = Contract(DOCUMENT)
    for path in ("/services", "/routes", "/consumers", "/upstreams", "/plugins"):
        kind = path.strip("/")
        example = DOCUMENT["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"]
        assert example == CREATE_EXAMPLES[kind]
        reply = await admin.post(path, json=example)
        contract.check(path, "POST", reply.status, content_type(reply.headers), reply.text)
        assert reply.status == 201, reply.body
    for path in (
        "/upstreams/{upstreams}/targets",
        "/consumers/{consumers}/key-auth",
        "/consumers/{consumers}/basic-auth",
        "/consumers/{consumers}/jwt",
        "/consumers/{consumers}/acls",
    ):
        operation = DOCUMENT["paths"][path]["post"]
        example = operation["requestBody"]["content"]["application/json"]["example"]
        url = path.format(**{p["name"]: p["example"] for p in DOCUMENT["paths"][path]["parameters"]})
        reply = await admin.post(url, json=example)
        contract.check(path, "POST", reply.status, content_type(reply.headers), reply.text)
        assert reply.status == 201, (path, reply.body)


async def test_form_bodies_as_the_document_encodes_them(admin: Admin) -> None:
    """Arrays as repeated names, records and foreign keys as ``deepObject`` (``a[b]=x``)."""
    encoding = DOCUMENT["paths"]["/routes"]["post"]["requestBody"]["content"][
        "application/x-www-form-urlencoded"
    ]["encoding"]
    assert encoding["service"] == {"style": "deepObject", "explode": True}
    await admin.created("/services", json=CREATE_EXAMPLES["services"])

    reply = await admin.post(
        "/routes",
        form=[("name", "pay"), ("paths", "/pay"), ("paths", "/checkout"), ("service[name]", "billing")],
    )

    assert reply.status == 201, reply.body
    assert reply.body["paths"] == ["/pay", "/checkout"]
    Contract(DOCUMENT).check("/routes", "POST", reply.status, content_type(reply.headers), reply.text)


async def test_the_key_examples_name_the_example_configs_entities(admin: Admin) -> None:
    contract = Contract(DOCUMENT)
    assert (await admin.post("/config", json=SEED_CONFIG)).status == 201
    checked = []
    for path, item in DOCUMENT["paths"].items():
        parameters = item.get("parameters", [])
        # One entity by its key: at the top level, or under its parent where it has no top level.
        if not parameters or item.get("get") is None or path.count("/") not in (2, 4):
            continue
        if path.count("/") == 4 and path not in (
            "/upstreams/{upstreams}/targets/{targets}",
            "/consumers/{consumers}/acls/{acls}",
        ):
            continue
        reply = await admin.get(path.format(**{p["name"]: p["example"] for p in parameters}))
        contract.check(path, "GET", reply.status, content_type(reply.headers), reply.text)
        assert reply.status == 200, (path, reply.body)
        checked.append(path)
    assert len(checked) == 14, checked


# -- the contract -----------------------------------------------------------------------------------------


class AdminThread:
    """The Admin API over a real store, served on its own event loop in a thread until ``stop``."""

    def __init__(self, dsn: str, settings: Settings) -> None:
        self.dsn = dsn
        self.settings = settings
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="admin-api", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the Admin API did not start within 30 s")
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self.sock.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start(); after it, by the requests that fail
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with Store.connect(self.dsn, timeout=10) as store:
            app = build_app(store, self.settings, node_id=NODE_ID, hostname="test-host")
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            try:
                await web.SockSite(runner, self.sock).start()
                self._ready.set()
                await self._stop.wait()
            finally:
                await runner.cleanup()


@dataclass
class Served:
    url: str
    session: requests.Session
    contract: Contract

    def reseed(self) -> None:
        """Back to the example config (a 304 that writes nothing when nothing changed it)."""
        reply = self.session.post(f"{self.url}/config?check_hash=1", json=SEED_CONFIG, timeout=30)
        assert reply.status_code in (201, 304), reply.text


@pytest.fixture(scope="module")
def served(bootstrapped: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    thread = AdminThread(bootstrapped, make_settings(tmp_path_factory.mktemp("openapi")))
    thread.start()
    try:
        with requests.Session() as session:
            document = session.get(f"{thread.url}/openapi.json", timeout=30).json()
            assert document == DOCUMENT
            yield Served(thread.url, session, Contract(document))
    finally:
        thread.stop()


@pytest.fixture
def seeded(served: Served) -> Served:
    served.reseed()
    return served


schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis_config())


# About 25 s for some 2,500 requests: slow, but CI runs slow tests too.
@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # A module-scoped server and a per-operation reseed, both deliberate.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_answer_is_one_the_document_declares(case: Any, seeded: Served) -> None:
    response = case.call(base_url=seeded.url, session=seeded.session, timeout=30)

    seeded.contract.check(
        case.operation.path,
        case.operation.method.upper(),
        response.status_code,
        content_type(response.headers),
        response.text,
    )
