"""The plugin framework through the real proxy: key-auth, request-termination, correlation-id,
and Kong's precedence between global, service, route and consumer instances."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from data_plane.test_proxy_e2e import echo, request, service
from harness.echo_upstream import EchoUpstream

ZONEGATE = Path(sys.executable).with_name("zonegate")


def upstream_headers(body: bytes) -> dict[str, str]:
    return dict(echo(body)["headers_lower"])


def test_key_auth(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    **service("private", echo_upstream),
                    "routes": [{"name": "private", "paths": ["/private"]}],
                    "plugins": [{"name": "key-auth", "config": {"hide_credentials": True}}],
                },
                {
                    **service("open", echo_upstream),
                    "routes": [{"name": "open", "paths": ["/open"]}],
                    "plugins": [
                        {"name": "key-auth", "config": {"anonymous": "guest", "key_names": ["x-key"]}}
                    ],
                },
            ],
            "consumers": [
                {"username": "alice", "custom_id": "c-1", "keyauth_credentials": [{"key": "alice-key"}]},
                {"username": "old", "keyauth_credentials": [{"key": "old-key", "ttl": 1}]},
                {"username": "guest"},
            ],
        }
    )
    status, headers, body = request(node, "GET", "/private/x")
    assert status == 401
    assert json.loads(body)["message"] == "No API key found in request"
    assert headers["www-authenticate"] == "Key"
    status, _, body = request(node, "GET", "/private/x", headers={"apikey": "wrong"})
    assert (status, json.loads(body)["message"]) == (401, "Invalid authentication credentials")

    status, _, body = request(
        node, "GET", "/private/x?apikey=alice-key&keep=1", headers={"apikey": "alice-key"}
    )
    assert status == 200
    seen = upstream_headers(body)
    assert seen["x-consumer-username"] == "alice" and seen["x-consumer-custom-id"] == "c-1"
    assert "x-consumer-id" in seen and "x-credential-identifier" in seen
    assert "apikey" not in seen  # hide_credentials: the key never reaches the upstream
    assert echo(body)["query"] == "keep=1"

    status, _, body = request(node, "GET", "/private/x?apikey=a&apikey=b")
    assert (status, json.loads(body)["message"]) == (401, "Duplicate API key found")

    # ttl: the key worked for one second after the config was loaded, and no longer.
    import time

    time.sleep(1.2)
    status, _, _ = request(node, "GET", "/private/x", headers={"apikey": "old-key"})
    assert status == 401

    # anonymous: a failed authentication becomes the anonymous consumer.
    status, _, body = request(node, "GET", "/open/x")
    assert status == 200
    seen = upstream_headers(body)
    assert seen["x-consumer-username"] == "guest" and seen["x-anonymous-consumer"] == "true"
    status, _, body = request(node, "GET", "/open/x", headers={"x-key": "alice-key"})
    assert upstream_headers(body)["x-consumer-username"] == "alice"


def test_request_termination_and_consumer_precedence(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    **service("svc", echo_upstream),
                    "routes": [
                        {"name": "app", "paths": ["/app"]},
                        {
                            "name": "down",
                            "paths": ["/down"],
                            "plugins": [
                                {
                                    "name": "request-termination",
                                    "config": {
                                        "status_code": 418,
                                        "body": "<b>tea</b>",
                                        "content_type": "text/html",
                                    },
                                }
                            ],
                        },
                        {
                            "name": "gone",
                            "paths": ["/gone"],
                            "plugins": [{"name": "request-termination"}],
                        },
                    ],
                }
            ],
            "plugins": [{"name": "key-auth"}],
            "consumers": [
                {"username": "ann", "keyauth_credentials": [{"key": "ann-key"}]},
                {
                    "username": "bob",
                    "keyauth_credentials": [{"key": "bob-key"}],
                    # Consumer-scoped: applies once key-auth has said who the caller is.
                    "plugins": [
                        {"name": "request-termination", "config": {"status_code": 403, "message": "banned"}}
                    ],
                },
            ],
        }
    )
    assert request(node, "GET", "/app", headers={"apikey": "ann-key"})[0] == 200
    status, _, body = request(node, "GET", "/app", headers={"apikey": "bob-key"})
    assert (status, json.loads(body)) == (403, {"message": "banned"})
    # A global key-auth runs before the route's request-termination (priority 1250 > 2).
    assert request(node, "GET", "/down")[0] == 401
    status, headers, body = request(node, "GET", "/down", headers={"apikey": "ann-key"})
    assert (status, headers["content-type"], body) == (418, "text/html", b"<b>tea</b>")
    status, _, body = request(node, "GET", "/gone", headers={"apikey": "ann-key"})
    assert (status, json.loads(body)) == (503, {"message": "Service unavailable"})
    # On /down, bob matches both route+nothing and consumer instances: route+consumer is not
    # configured, so the consumer instance (more specific than route alone) wins.
    status, _, body = request(node, "GET", "/down", headers={"apikey": "bob-key"})
    assert (status, json.loads(body)) == (403, {"message": "banned"})


def test_correlation_id_and_scope_precedence(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    **service("svc", echo_upstream),
                    "routes": [
                        {"name": "plain", "paths": ["/plain"]},
                        {
                            "name": "special",
                            "paths": ["/special"],
                            "plugins": [
                                {
                                    "name": "correlation-id",
                                    "config": {"header_name": "X-Route-Id", "generator": "uuid"},
                                }
                            ],
                        },
                    ],
                    "plugins": [
                        {
                            "name": "correlation-id",
                            "config": {"header_name": "X-Service-Id", "echo_downstream": True},
                        }
                    ],
                },
                {**service("other", echo_upstream), "routes": [{"name": "other", "paths": ["/other"]}]},
            ],
            "plugins": [{"name": "correlation-id", "config": {"header_name": "X-Global-Id"}}],
        }
    )
    status, headers, body = request(node, "GET", "/plain")
    seen = upstream_headers(body)
    assert status == 200 and "#" in seen["x-service-id"] and "x-global-id" not in seen
    assert headers["x-service-id"] == seen["x-service-id"]  # echo_downstream
    seen = upstream_headers(request(node, "GET", "/special")[2])
    assert len(seen["x-route-id"]) == 36 and "x-service-id" not in seen  # route beats service
    seen = upstream_headers(request(node, "GET", "/other")[2])
    assert "x-global-id" in seen  # nothing more specific: the global instance
    # A client's own id is kept.
    seen = upstream_headers(request(node, "GET", "/other", headers={"X-Global-Id": "mine"})[2])
    assert seen["x-global-id"] == "mine"


def test_invalid_plugin_configs_are_refused_with_kong_errors(tmp_path: Path) -> None:
    path = tmp_path / "kong.yml"
    path.write_text(
        '_format_version: "3.0"\n'
        "plugins:\n"
        "  - name: key-auth\n"
        "    config: {key_names: ['bad name'], nope: 1}\n"
        "  - name: request-termination\n"
        "    config: {message: a, body: b}\n"
        "consumers:\n"
        "  - username: x\n"
        "    plugins: [{name: key-auth}]\n"
    )
    result = subprocess.run(
        [str(ZONEGATE), "config", "parse", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "plugins[0].config.nope: unknown field" in result.stderr
    assert "plugins[0].config.key_names" in result.stderr
    assert "message cannot be used with content_type or body" in result.stderr
    assert "consumers[0].plugins[0].consumer: value must be null" in result.stderr
