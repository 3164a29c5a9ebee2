"""cors through the real proxy: preflights answered with Kong's headers, simple requests given
the allow-origin headers (exact, regex, ``*``, credentials), Vary: Origin, and its schema."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from data_plane.test_proxy_e2e import request, service
from harness.echo_upstream import EchoUpstream
from zonegate.core import declarative
from zonegate.core.errors import DeclarativeConfigError
from zonegate.plugins.cors.handler import normalize_origin


def raw(
    node: Any, method: str, path: str, headers: dict[str, str]
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Like ``request`` but keeps repeated response headers."""
    conn = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=15)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, [(k.lower(), v) for k, v in response.getheaders()], response.read()
    finally:
        conn.close()


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k == name]


def cors_route(name: str, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "paths": [f"/{name}"], "plugins": [{"name": "cors", "config": config}], **extra}


@pytest.fixture
def node(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> Any:
    return zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    **service("svc", echo_upstream),
                    "routes": [
                        cors_route("any", {}),
                        cors_route(
                            "one",
                            {
                                "origins": ["http://example.com"],
                                "credentials": True,
                                "exposed_headers": ["X-Total", "X-Page"],
                                "headers": ["X-H1", "X-H2"],
                                "methods": ["GET", "POST"],
                                "max_age": 3600,
                                "private_network": True,
                            },
                        ),
                        cors_route(
                            "many",
                            {"origins": ["http://a.com:8080", r"(.*)\.example\.org", "https://exact.net"]},
                        ),
                        cors_route("starcreds", {"origins": ["*"], "credentials": True}),
                        cors_route("starmany", {"origins": ["http://a.com", "*"]}),
                        cors_route("continue", {"preflight_continue": True}),
                        cors_route(
                            "absent",
                            {"origins": ["http://x.com", "http://y.com"], "allow_origin_absent": False},
                        ),
                        {
                            "name": "auth",
                            "paths": ["/auth"],
                            "plugins": [
                                {"name": "cors", "config": {"origins": ["http://app.test"]}},
                                {"name": "key-auth"},
                            ],
                        },
                    ],
                }
            ],
        }
    )


def test_preflight_is_answered_with_kongs_headers(node: Any, echo_upstream: EchoUpstream) -> None:
    before = echo_upstream.requests_received
    status, headers, body = raw(
        node,
        "OPTIONS",
        "/one/x",
        {
            "Origin": "http://example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    assert (status, body) == (200, b"")
    found = dict(headers)
    assert found["access-control-allow-origin"] == "http://example.com"
    assert found["vary"] == "Origin"
    assert found["access-control-allow-credentials"] == "true"
    assert found["access-control-allow-headers"] == "X-H1,X-H2"
    assert found["access-control-allow-methods"] == "GET,POST"
    assert found["access-control-max-age"] == "3600"
    assert found["access-control-allow-private-network"] == "true"
    assert found["content-length"] == "0"
    assert "access-control-expose-headers" not in found  # only on actual responses
    assert echo_upstream.requests_received == before  # never proxied

    # Defaults: "*", the requested headers echoed, every method; no Vary for "*".
    status, headers, _ = raw(
        node,
        "OPTIONS",
        "/any",
        {
            "Origin": "http://o.test",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "X-A",
        },
    )
    found = dict(headers)
    assert status == 200 and found["access-control-allow-origin"] == "*" and "vary" not in found
    assert found["access-control-allow-headers"] == "X-A"
    assert found["access-control-allow-methods"] == "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT"
    assert "access-control-allow-credentials" not in found and "access-control-max-age" not in found
    assert "access-control-allow-private-network" not in found

    # Not a preflight (no Access-Control-Request-Method): proxied, with the simple-request headers.
    status, headers, body = raw(node, "OPTIONS", "/any", {"Origin": "http://o.test"})
    assert status == 200 and json.loads(body)["method"] == "OPTIONS"
    assert dict(headers)["access-control-allow-origin"] == "*"

    # preflight_continue: the upstream answers the preflight, and the plugin adds nothing.
    status, headers, body = raw(
        node, "OPTIONS", "/continue", {"Origin": "http://o.test", "Access-Control-Request-Method": "GET"}
    )
    assert status == 200 and json.loads(body)["method"] == "OPTIONS"
    assert "access-control-allow-origin" not in dict(headers)


def test_simple_requests_get_the_allow_origin_headers(node: Any) -> None:
    status, headers, _ = raw(
        node,
        "GET",
        "/one",
        {"Origin": "http://example.com", "X-Echo-Response-Header": "Vary: Accept-Encoding"},
    )
    assert status == 200
    found = dict(headers)
    assert found["access-control-allow-origin"] == "http://example.com"
    assert found["access-control-allow-credentials"] == "true"
    assert found["access-control-expose-headers"] == "X-Total,X-Page"
    assert values(headers, "vary") == ["Accept-Encoding", "Origin"]  # added to the upstream's
    assert "access-control-allow-methods" not in found and "access-control-max-age" not in found

    # One plain origin is sent whatever the request's origin is (Kong's behaviour).
    assert (
        dict(raw(node, "GET", "/one", {"Origin": "http://other.test"})[1])["access-control-allow-origin"]
        == "http://example.com"
    )

    def allowed(origin: str, path: str = "/many") -> str | None:
        headers = dict(
            raw(
                node,
                "GET",
                path,
                {"Origin": origin, "X-Echo-Response-Header": "Access-Control-Allow-Origin: up"},
            )[1]
        )
        assert headers.get("vary") == "Origin"
        return headers.get("access-control-allow-origin")

    assert allowed("http://a.com:8080") == "http://a.com:8080"
    assert allowed("http://a.com") is None  # the port is part of the origin
    assert allowed("https://sub.example.org") == "https://sub.example.org"  # regex on the host
    assert allowed("https://example.org.evil.test") is None  # anchored at both ends
    assert allowed("https://exact.net:443") == "https://exact.net"  # default port dropped
    assert allowed("http://exact.net") is None
    assert allowed("http://evil.test") is None  # the upstream's own header is cleared too

    # "*" with credentials: the request's origin instead, since browsers refuse "*" then.
    found = dict(raw(node, "GET", "/starcreds", {"Origin": "http://z.test"})[1])
    assert found["access-control-allow-origin"] == "http://z.test"
    assert found["access-control-allow-credentials"] == "true" and found["vary"] == "Origin"
    found = dict(raw(node, "GET", "/starcreds", {})[1])
    assert found["access-control-allow-origin"] == "*" and "access-control-allow-credentials" not in found
    # A "*" among other origins allows any origin.
    assert (
        dict(raw(node, "GET", "/starmany", {"Origin": "http://q.test"})[1])["access-control-allow-origin"]
        == "*"
    )


def test_requests_without_origin_and_plugin_errors(node: Any) -> None:
    # allow_origin_absent (default true): headers even without Origin.
    found = dict(raw(node, "GET", "/any", {})[1])
    assert found["access-control-allow-origin"] == "*"
    # With it off: nothing without an Origin; with one, the usual answer.
    found = dict(
        raw(node, "GET", "/absent", {"X-Echo-Response-Header": "Access-Control-Allow-Origin: up"})[1]
    )
    assert found["access-control-allow-origin"] == "up" and "vary" not in found
    found = dict(raw(node, "GET", "/absent", {"Origin": "http://y.com"})[1])
    assert found["access-control-allow-origin"] == "http://y.com"
    # Several origins and no Origin header: no allow-origin at all.
    assert "access-control-allow-origin" not in dict(raw(node, "GET", "/many", {})[1])

    # A later plugin's refusal still carries the CORS headers, so the browser can read it.
    status, headers, body = raw(node, "GET", "/auth", {"Origin": "http://app.test"})
    found = dict(headers)
    assert status == 401 and json.loads(body)["message"] == "No API key found in request"
    assert found["access-control-allow-origin"] == "http://app.test" and found["vary"] == "Origin"
    assert found["www-authenticate"].startswith("Key")  # the exit's own headers are kept
    # ...and the preflight never reaches key-auth (priority 2000 > 1250).
    status, headers, _ = raw(
        node, "OPTIONS", "/auth", {"Origin": "http://app.test", "Access-Control-Request-Method": "GET"}
    )
    assert status == 200 and dict(headers)["access-control-allow-origin"] == "http://app.test"
    assert request(node, "GET", "/auth", headers={"Origin": "http://app.test"})[0] == 401


def test_origin_normalization() -> None:
    assert normalize_origin("http://a.com:80") == ("http://a.com", "a.com")
    assert normalize_origin("https://a.com:443") == ("https://a.com", "a.com")
    assert normalize_origin("https://a.com:80") == ("https://a.com:80", "a.com")
    assert normalize_origin("http://user@a.com:8080/p") == ("http://a.com:8080", "a.com")
    assert normalize_origin("http://[::1]:8080") == ("http://[::1]:8080", "::1")
    assert normalize_origin("null") == ("null", "null")


def config_errors(config: dict[str, Any], **plugin: Any) -> dict[str, Any]:
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.load(
            {
                "_format_version": "3.0",
                "plugins": [{"name": "cors", "config": config, **plugin}],
                "consumers": [{"username": "c"}],
            }
        )
    return dict(info.value.fields["plugins"][0])


def test_schema_defaults_and_refusals() -> None:
    loaded = declarative.load({"_format_version": "3.0", "plugins": [{"name": "cors"}]})
    assert loaded.of("plugins")[0]["config"] == {
        "origins": None,
        "headers": None,
        "exposed_headers": None,
        "methods": ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT"],
        "max_age": None,
        "credentials": False,
        "private_network": False,
        "preflight_continue": False,
        "allow_origin_absent": True,
    }
    assert config_errors({"origins": ["*", "http://ok.test", "(bad"]}) == {
        "config": {"origins": [None, None, "'(bad' is not a valid regex"]}
    }
    assert config_errors({"methods": ["GET", "FETCH"], "max_age": "1h", "credentials": "yes"}) == {
        "config": {
            "methods": [
                None,
                "expected one of: GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS, TRACE, CONNECT",
            ],
            "max_age": "expected a number",
            "credentials": "expected a boolean",
        }
    }
    assert config_errors({"nope": 1}) == {"config": {"nope": "unknown field"}}
    assert config_errors({}, consumer="c") == {"consumer": "value must be null"}
