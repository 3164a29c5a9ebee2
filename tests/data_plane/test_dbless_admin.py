"""Kong's DB-less Admin API end to end: a real traditional node with ``database = off``, a declarative
file, a real upstream, and requests through both the Admin API and the proxy.

Reads answer from the running config; entity writes answer 405 with Kong's code 12 body;
``POST /config`` replaces the running config (proxy and LMDB cache), ``?check_hash=1`` answers 304
for the config already running, and a bad config is a 400 with every error located while the old
config keeps serving.
"""

from __future__ import annotations

import http.client
import json
import secrets
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.echo_upstream import EchoUpstream
from harness.zonegate_node import ZonegateNode
from zonegate.control_plane.admin_api.dbless import serves_admin_api
from zonegate.core import declarative
from zonegate.embedded.ports import free_port, port_accepts
from zonegate.settings import load_settings

UNSUPPORTED = {"code": 12, "name": "operation unsupported"}
MISSING_ID = "6a3c4e2b-1f0d-4c8e-9b7a-0000000000ff"


class DbLessNode:
    """A started node and its Admin API port."""

    def __init__(self, node: ZonegateNode, admin_port: int) -> None:
        self.node = node
        self.admin_port = admin_port

    def admin(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: dict[str, str] | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        sent = dict(headers or {})
        body: bytes | None = data
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        elif form is not None:
            body = urllib.parse.urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        if response.getheader("Content-Type", "").startswith("application/json") and raw:
            return response.status, json.loads(raw)
        return response.status, raw.decode()

    def get(self, path: str) -> Any:
        status, body = self.admin("GET", path)
        assert status == 200, (path, status, body)
        return body

    def proxy(self, path: str, host: str | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.node.proxy_port, timeout=15)
        try:
            conn.request("GET", path, headers={"Host": host} if host else {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def start(factory: Any, document: dict[str, Any] | None, **env: str) -> DbLessNode:
    admin_port = free_port()
    extra = {"ZONEGATE_ROLE": "traditional", "ZONEGATE_ADMIN_LISTEN": f"127.0.0.1:{admin_port}", **env}
    node = factory(document, extra)
    wait_for_port(admin_port)
    return DbLessNode(node, admin_port)


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_accepts("127.0.0.1", port):
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.05)


def file_document(upstream: EchoUpstream) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "services": [
            {
                "name": "billing",
                "url": upstream.url,
                "tags": ["team-a", "prod"],
                "routes": [
                    {"name": "pay", "paths": ["/pay"], "tags": ["prod"]},
                    {"name": "refund", "paths": ["/refund"]},
                ],
            },
            {"name": "search", "url": f"{upstream.url}/s", "tags": ["team-b"]},
            {"name": "orders", "url": f"{upstream.url}/o", "tags": ["team-a"]},
            {"name": "users", "url": f"{upstream.url}/u"},
            {"name": "audit", "url": f"{upstream.url}/a", "tags": ["team-b", "prod"]},
        ],
        "consumers": [{"username": "ann", "custom_id": "c-1", "keyauth_credentials": [{"key": "ann-key"}]}],
        "upstreams": [{"name": "pool", "targets": [{"target": "10.0.0.1:8080"}, {"target": "10.0.0.2"}]}],
    }


def names(page: dict[str, Any]) -> list[str]:
    return [entity["name"] for entity in page["data"]]


# -- reads ------------------------------------------------------------------------------------------------


def test_reads_answer_from_the_declarative_file(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    node = start(zonegate_node_factory, file_document(echo_upstream))
    config = declarative.load(file_document(echo_upstream))
    services = sorted(config.of("services"), key=lambda s: s["id"])

    everything = node.get("/services")
    assert [s["id"] for s in everything["data"]] == [s["id"] for s in services]
    assert everything["next"] is None and "offset" not in everything
    assert all(isinstance(s["created_at"], int) and s["created_at"] > 0 for s in everything["data"])

    # Pagination: Kong's size/offset/next, in id order, nothing skipped or repeated.
    first = node.get("/services?size=2")
    assert len(first["data"]) == 2 and first["offset"]
    assert first["next"] == f"/services?offset={first['offset']}&size=2"
    second = node.get(first["next"])
    third = node.get(second["next"])
    assert third["next"] is None
    paged = [s["id"] for page in (first, second, third) for s in page["data"]]
    assert paged == [s["id"] for s in services]
    status, body = node.admin("GET", "/services?offset=x")
    assert (status, body["code"], body["name"]) == (400, 7, "invalid offset")
    status, body = node.admin("GET", "/services?size=0")
    assert (status, body["code"]) == (400, 9)

    # Tags: a,b is every tag; a/b any of them.
    assert sorted(names(node.get("/services?tags=team-a,prod"))) == ["billing"]
    assert sorted(names(node.get("/services?tags=team-a/team-b"))) == ["audit", "billing", "orders", "search"]
    assert names(node.get("/routes?tags=prod")) == ["pay"]

    # One entity by name or id; nested paths through foreign keys.
    billing = node.get("/services/billing")
    assert billing["host"] == "127.0.0.1" and billing["port"] == echo_upstream.port
    assert node.get(f"/services/{billing['id']}") == billing
    assert sorted(names(node.get("/services/billing/routes"))) == ["pay", "refund"]
    assert node.get("/routes/pay/service")["id"] == billing["id"]
    assert node.get("/services/billing/routes/pay")["name"] == "pay"
    assert node.admin("GET", "/services/search/routes/pay")[0] == 404
    assert node.admin("GET", "/services/nope")[0] == 404
    assert node.admin("GET", f"/services/{MISSING_ID}")[0] == 404
    assert node.get("/consumers/ann/key-auth")["data"][0]["key"] == "ann-key"
    assert node.get("/consumers?custom_id=c-1")["data"][0]["username"] == "ann"
    targets = node.get("/upstreams/pool/targets")["data"]
    assert sorted(t["target"] for t in targets) == ["10.0.0.1:8080", "10.0.0.2:8000"]
    assert node.get("/upstreams/pool/targets/10.0.0.2")["target"] == "10.0.0.2:8000"

    # /tags, /tags/{tag}, /schemas, /, /status, GET /config.
    prod = node.get("/tags/prod")["data"]
    assert sorted(row["entity_name"] for row in prod) == ["routes", "services", "services"]
    all_tags = node.get("/tags?size=3")
    assert [row["tag"] for row in all_tags["data"]] == ["prod", "prod", "prod"]
    assert node.get(all_tags["next"])["data"][0]["tag"] == "team-a"
    assert node.get("/schemas/services")["fields"][0]["id"]["type"] == "string"
    root = node.get("/")
    assert root["configuration"]["database"] == "off" and root["configuration"]["role"] == "traditional"
    status_body = node.get("/status")
    assert status_body["database"] == {"reachable": True}
    assert status_body["configuration_hash"] == node.node.status()["configuration_hash"]
    exported = declarative.loads(node.get("/config")["config"])
    assert exported == config


# -- writes -----------------------------------------------------------------------------------------------


def unsupported(operation: str, kind: str, by: str | None = None) -> dict[str, Any]:
    """Kong's body for a refused write (``kong/db/strategies/off/init.lua``)."""
    by_field = f" by '{by}'" if by else ""
    return {
        **UNSUPPORTED,
        "message": f"cannot {operation} '{kind}' entities{by_field} when not using a database",
    }


def test_every_entity_write_answers_kongs_405(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    node = start(zonegate_node_factory, file_document(echo_upstream))
    billing = node.get("/services/billing")
    target = node.get("/upstreams/pool/targets/10.0.0.2")
    new = {"name": "new", "host": "new.internal"}
    billing_id = billing["id"]
    refused = [
        ("POST", "/services", new, unsupported("create", "services")),
        ("PUT", "/services/new", new, unsupported("create or update", "services", "name")),
        ("PUT", "/services/billing", new, unsupported("create or update", "services", "name")),
        ("PUT", f"/services/{MISSING_ID}", new, unsupported("create or update", "services")),
        ("PATCH", "/services/billing", {"retries": 2}, unsupported("update", "services", "name")),
        ("PATCH", f"/services/{billing_id}", {"retries": 2}, unsupported("update", "services")),
        ("DELETE", "/services/billing", None, unsupported("remove", "services", "name")),
        ("DELETE", f"/services/{billing_id}", None, unsupported("remove", "services")),
        ("POST", "/services/billing/routes", {"paths": ["/x"]}, unsupported("create", "routes")),
        ("DELETE", "/services/billing/routes/pay", None, unsupported("remove", "routes", "name")),
        ("PATCH", "/routes/pay/service", {"retries": 1}, unsupported("update", "services")),
        ("POST", "/consumers/ann/key-auth", {"key": "k2"}, unsupported("create", "keyauth_credentials")),
        ("DELETE", "/upstreams/pool/targets/10.0.0.2", None, unsupported("remove", "targets")),
        ("POST", "/upstreams/pool/targets", {"target": "10.0.0.3"}, unsupported("create", "targets")),
        ("POST", "/plugins", {"name": "cors"}, unsupported("create", "plugins")),
    ]
    for method, path, body, expected in refused:
        assert node.admin(method, path, json_body=body) == (405, expected), (method, path)

    # Form bodies too, as Kong's tests send them.
    form = {"name": "f", "host": "f.internal"}
    assert node.admin("POST", "/services", form=form) == (405, unsupported("create", "services"))
    # What Kong checks before its strategy refuses: validation, existence, the route table.
    status, body = node.admin("POST", "/services", json_body={"name": "bad", "host": "bad host"})
    assert (status, body["code"], body["fields"]) == (400, 2, {"host": "invalid value: bad host"})
    status, body = node.admin("PATCH", "/services/billing", json_body={"port": 70000})
    assert (status, body["code"]) == (400, 2)
    assert node.admin("PATCH", "/services/nope", json_body={"retries": 2}) == (404, {"message": "Not found"})
    assert node.admin("DELETE", "/services/nope") == (204, "")
    assert node.admin("DELETE", f"/services/{MISSING_ID}") == (204, "")
    assert node.admin("DELETE", "/services") == (405, {"message": "Method not allowed"})
    assert node.admin("POST", f"/services/{billing['id']}", json_body={}) == (
        405,
        {"message": "Method not allowed"},
    )

    # Nothing changed, and the proxy still routes the file's config.
    assert node.get("/services/billing") == billing
    assert node.get(f"/upstreams/pool/targets/{target['id']}") == target
    assert node.proxy("/pay/x")[0] == 200


# -- POST /config -----------------------------------------------------------------------------------------


def new_document(upstream: EchoUpstream) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "services": [
            {
                "name": "catalog",
                "url": f"{upstream.url}/cat",
                "routes": [{"name": "items", "paths": ["/items"]}],
            }
        ],
    }


def test_post_config_is_applied_to_the_proxy_and_the_cache(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    node = start(zonegate_node_factory, file_document(echo_upstream))
    old_hash = node.node.status()["configuration_hash"]
    text = yaml.safe_dump(new_document(echo_upstream), sort_keys=False)

    status, body = node.admin("POST", "/config", form={"config": text})

    assert status == 201, body
    catalog = node.get("/services/catalog")
    assert body["services"] == {
        catalog["id"]: {k: v for k, v in catalog.items() if k not in ("created_at", "updated_at")}
    }
    assert [route["name"] for route in body["routes"].values()] == ["items"]
    new_hash = node.node.status()["configuration_hash"]
    assert new_hash != old_hash
    assert node.get("/status")["configuration_hash"] == new_hash
    proxied_status, proxied = node.proxy("/items/1")
    assert proxied_status == 200 and json.loads(proxied)["path"] == "/cat/1"
    assert node.proxy("/pay")[0] == 404
    assert node.admin("GET", "/services/billing")[0] == 404
    assert names(node.get("/services")) == ["catalog"]

    # The same config again with check_hash=1: 304, nothing applied. Without it: applied again.
    assert node.admin("POST", "/config?check_hash=1", form={"config": text}) == (304, "")
    assert node.admin("POST", "/config?check_hash=1", json_body=new_document(echo_upstream))[0] == 304
    assert node.admin("POST", "/config", json_body={"config": text})[0] == 201
    assert node.node.status()["configuration_hash"] == new_hash

    # A restart without the file boots from the LMDB cache: the posted config.
    node.node.stop()
    del node.node.env["ZONEGATE_DECLARATIVE_CONFIG"]
    node.node.start()
    wait_for_port(node.admin_port)
    assert node.node.status()["configuration_hash"] == new_hash
    assert node.proxy("/items/2")[0] == 200
    assert names(node.get("/services")) == ["catalog"]

    # With no file, SIGHUP has nothing to re-read: the running config stays.
    node.node.reload()
    deadline = time.monotonic() + 10
    while "config.reload_skipped" not in node.node.read_log():
        assert time.monotonic() < deadline, node.node.read_log()
        time.sleep(0.05)
    assert node.proxy("/items/3")[0] == 200


def test_post_config_takes_the_document_as_json_or_yaml(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    node = start(zonegate_node_factory, file_document(echo_upstream))
    document = new_document(echo_upstream)

    assert node.admin("POST", "/config", json_body=document)[0] == 201
    assert names(node.get("/services")) == ["catalog"]

    document["services"][0]["name"] = "catalog-2"
    raw_yaml = yaml.safe_dump(document).encode()
    assert (
        node.admin("POST", "/config", data=raw_yaml, headers={"Content-Type": "application/yaml"})[0] == 201
    )
    assert names(node.get("/services")) == ["catalog-2"]

    assert (
        node.admin("POST", "/config", json_body={"config": json.dumps(document | {"services": []})})[0] == 201
    )
    assert node.get("/services")["data"] == []
    assert node.proxy("/items")[0] == 404


def test_a_bad_config_is_400_with_located_errors_and_the_old_config_keeps_serving(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    node = start(zonegate_node_factory, file_document(echo_upstream))
    old_hash = node.node.status()["configuration_hash"]
    bad = {
        "_format_version": "3.0",
        "services": [
            {"name": "ok", "url": echo_upstream.url, "routes": [{"paths": ["no-slash"]}]},
            {"name": "broken", "port": 70000},
        ],
    }

    status, body = node.admin("POST", "/config", json_body=bad)

    assert status == 400
    assert (body["code"], body["name"]) == (14, "invalid declarative configuration")
    assert body["fields"]["services"][1] == {
        "host": "required field missing",
        "port": "value should be between 0 and 65535",
    }
    located = {(e["path"], e["message"]) for e in body["flattened_errors"]}
    assert (
        "services[0].routes[0].paths[0]",
        "should start with: / (fixed path) or ~/ (regex path)",
    ) in located
    assert ("services[1].port", "value should be between 0 and 65535") in located

    status, body = node.admin("POST", "/config", form={"config": "services: [unclosed"})
    assert (status, body["code"]) == (400, 14)
    assert node.admin("POST", "/config") == (400, {"message": "expected a declarative configuration"})

    assert node.node.status()["configuration_hash"] == old_hash
    assert node.proxy("/pay")[0] == 200
    assert "billing" in names(node.get("/services"))


def test_post_config_reaches_every_worker(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = start(zonegate_node_factory, file_document(echo_upstream), ZONEGATE_WORKERS="2")

    assert node.admin("POST", "/config", json_body=new_document(echo_upstream))[0] == 201

    # Each request may land on either worker (SO_REUSEPORT, a new connection each time).
    assert {node.proxy("/items")[0] for _ in range(20)} == {200}
    assert {node.proxy("/pay")[0] for _ in range(20)} == {404}


def test_a_config_larger_than_the_lmdb_map_is_413_and_changes_nothing(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    node = start(zonegate_node_factory, file_document(echo_upstream), ZONEGATE_LMDB_MAP_SIZE="1m")
    old_hash = node.node.status()["configuration_hash"]
    # Random names do not compress: well over 1 MiB in the cache.
    huge = {
        "_format_version": "3.0",
        "consumers": [
            {"username": secrets.token_hex(32), "custom_id": secrets.token_hex(32)} for _ in range(15000)
        ],
    }

    status, body = node.admin("POST", "/config", json_body=huge)

    assert status == 413, body
    assert body == {
        "message": 'Configuration does not fit in LMDB database, consider raising the "lmdb_map_size" '
        "config for Zonegate"
    }
    assert node.node.status()["configuration_hash"] == old_hash
    assert node.proxy("/pay")[0] == 200


# -- which nodes serve it -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "admin_listen", "served"),
    [
        ("traditional", "127.0.0.1:8001", True),
        ("traditional", "off", False),
        ("data_plane", "127.0.0.1:8001", False),
    ],
)
def test_only_a_traditional_node_serves_the_admin_api(
    tmp_path: Path, role: str, admin_listen: str, served: bool
) -> None:
    # Kong's rule: no Admin API on a data plane, whatever admin_listen says (its default is not off).
    settings = load_settings(
        {
            "ZONEGATE_ROLE": role,
            "ZONEGATE_DATABASE": "off",
            "ZONEGATE_PREFIX": str(tmp_path),
            "ZONEGATE_ADMIN_LISTEN": admin_listen,
            "ZONEGATE_CLUSTER_CERT": str(tmp_path / "cluster.crt"),
            "ZONEGATE_CLUSTER_CERT_KEY": str(tmp_path / "cluster.key"),
        }
    )

    assert serves_admin_api(settings) is served
