"""basic-auth through the real proxy (Kong's ``spec/03-plugins/10-basic-auth/03-access_spec.lua``
cases, 3.6+ answers), and its config schema."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from data_plane.test_proxy_e2e import echo, request, service
from harness.echo_upstream import EchoUpstream
from zonegate.core import declarative
from zonegate.core.errors import DeclarativeConfigError
from zonegate.plugins.basic_auth.handler import parse_basic

BOB_ID = "0b7ae8c0-8b2e-4c67-9f3e-6f7a8c9d0e1f"
GHOST = "6c0d7e3a-0000-4000-8000-000000000000"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def seen(body: bytes) -> dict[str, str]:
    return dict(echo(body)["headers_lower"])


def route(name: str, *plugins: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "paths": [f"/{name}"], "plugins": list(plugins)}


def test_basic_auth(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    **service("svc", echo_upstream),
                    "routes": [
                        route("basic", {"name": "basic-auth"}),
                        route("hidden", {"name": "basic-auth", "config": {"hide_credentials": True}}),
                        route("anon", {"name": "basic-auth", "config": {"anonymous": "no-body"}}),
                        route("ghost", {"name": "basic-auth", "config": {"anonymous": GHOST}}),
                        route("realm", {"name": "basic-auth", "config": {"realm": "billing"}}),
                        route("both", {"name": "basic-auth"}, {"name": "key-auth"}),
                        route(
                            "either",
                            {"name": "basic-auth", "config": {"anonymous": "no-body"}},
                            {"name": "key-auth", "config": {"anonymous": "no-body"}},
                        ),
                    ],
                }
            ],
            "consumers": [
                {
                    "id": BOB_ID,
                    "username": "bob",
                    "custom_id": "b-1",
                    "basicauth_credentials": [
                        {"username": "bob", "password": "kong"},
                        {"username": "user321", "password": "password:123"},
                        {"username": "ünï", "password": "pässword"},
                        # Already a digest (an export): kept as it is, the clear one is "secret".
                        {
                            "username": "hashed",
                            "password": hashlib.sha1(("secret" + BOB_ID).encode()).hexdigest(),
                        },
                    ],
                },
                {"username": "mickey", "keyauth_credentials": [{"key": "mouse"}]},
                {"username": "no-body"},
            ],
        }
    )

    # No credentials at all: 401 Unauthorized with the challenge (Kong's error body).
    status, headers, body = request(node, "GET", "/basic/x")
    assert status == 401
    assert json.loads(body)["message"] == "Unauthorized" and "request_id" in json.loads(body)
    assert headers["www-authenticate"] == 'Basic realm="service"'

    # Anything that is not a known user with the right password: 401, same challenge.
    for header, value in (
        ("Authorization", "foobar"),
        ("Proxy-Authorization", "foobar"),
        ("Authorization", "Basic a29uZw=="),  # "kong": a password without a user
        ("Authorization", "Basic Ym9i"),  # "bob": a user without a password
        ("Authorization", "Basic adXNlcjEyMzpwYXNzd29yZDEyMw=="),  # not valid base64
        ("Authorization", basic("bob", "wrong")),
        ("Authorization", basic("nobody", "kong")),
    ):
        status, headers, body = request(node, "GET", "/basic/x", headers={header: value})
        assert status == 401, (header, value)
        assert json.loads(body)["message"] == "Invalid authentication credentials"
        assert headers["www-authenticate"] == 'Basic realm="service"'

    # Valid credentials: the consumer's headers go upstream, the Authorization header too.
    status, _, body = request(
        node,
        "GET",
        "/basic/x",
        headers={"Authorization": basic("bob", "kong"), "X-Consumer-Username": "spoofed"},
    )
    assert status == 200
    upstream = seen(body)
    assert upstream["x-consumer-username"] == "bob" and upstream["x-consumer-custom-id"] == "b-1"
    assert upstream["x-consumer-id"] == BOB_ID
    assert upstream["x-credential-identifier"] == "bob"  # Kong sends the user name
    assert upstream["authorization"] == basic("bob", "kong")
    assert "x-anonymous-consumer" not in upstream
    for user, password in (("user321", "password:123"), ("ünï", "pässword"), ("hashed", "secret")):
        assert request(node, "GET", "/basic/x", headers={"Authorization": basic(user, password)})[0] == 200
    # The digest itself is not a password.
    digest = hashlib.sha1(("secret" + BOB_ID).encode()).hexdigest()
    assert request(node, "GET", "/basic/x", headers={"Authorization": basic("hashed", digest)})[0] == 401
    # Proxy-Authorization works, and is tried first.
    assert request(node, "GET", "/basic/x", headers={"Proxy-Authorization": basic("bob", "kong")})[0] == 200
    status, _, body = request(
        node,
        "GET",
        "/basic/x",
        headers={"Proxy-Authorization": basic("user321", "password:123"), "Authorization": basic("bob", "x")},
    )
    assert status == 200 and seen(body)["x-credential-identifier"] == "user321"

    # hide_credentials: neither header reaches the upstream.
    status, _, body = request(
        node,
        "GET",
        "/hidden/x",
        headers={"Authorization": basic("bob", "kong"), "Proxy-Authorization": "Basic x"},
    )
    assert status == 200
    assert "authorization" not in seen(body) and "proxy-authorization" not in seen(body)

    # anonymous: a failed authentication goes on as the anonymous consumer.
    status, _, body = request(node, "GET", "/anon/x")
    assert status == 200
    assert seen(body)["x-consumer-username"] == "no-body" and seen(body)["x-anonymous-consumer"] == "true"
    status, _, body = request(node, "GET", "/anon/x", headers={"Authorization": basic("bob", "kong")})
    assert seen(body)["x-consumer-username"] == "bob" and "x-anonymous-consumer" not in seen(body)
    status, _, body = request(node, "GET", "/ghost/x")
    assert status == 500
    assert json.loads(body)["message"] == f"anonymous consumer {GHOST} is configured but doesn't exist"

    status, headers, _ = request(node, "GET", "/realm/x")
    assert (status, headers["www-authenticate"]) == (401, 'Basic realm="billing"')

    # Two auth plugins without anonymous: both must pass (key-auth runs first, 1250 > 1100).
    assert request(node, "GET", "/both/x", headers={"Authorization": basic("bob", "kong")})[0] == 401
    assert request(node, "GET", "/both/x", headers={"apikey": "mouse"})[0] == 401
    both = {"apikey": "mouse", "Authorization": basic("bob", "kong")}
    assert request(node, "GET", "/both/x", headers=both)[0] == 200
    # With anonymous on both: either one is enough (logical OR).
    status, _, body = request(node, "GET", "/either/x", headers={"Authorization": basic("bob", "kong")})
    assert (status, seen(body)["x-consumer-username"]) == (200, "bob")
    status, _, body = request(node, "GET", "/either/x", headers={"apikey": "mouse"})
    assert (status, seen(body)["x-consumer-username"]) == (200, "mickey")
    assert "x-anonymous-consumer" not in seen(body)
    status, _, body = request(node, "GET", "/either/x")
    assert (status, seen(body)["x-anonymous-consumer"]) == (200, "true")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (basic("a", "b:c"), (b"a", b"b:c")),
        (basic("a", ""), (b"a", b"")),
        ("basic " + base64.b64encode(b"a:b").decode().rstrip("="), (b"a", b"b")),  # unpadded
        ("Bearer x Basic " + base64.b64encode(b"a:b").decode(), (b"a", b"b")),  # unanchored, as ngx.re
        ("Basic " + base64.b64encode(b":b").decode(), None),
        ("Basic " + base64.b64encode(b"ab").decode(), None),
        ("Basic YT piYg==", None),  # a space inside: nginx refuses the whole value
        ("Digest abc", None),
    ],
)
def test_parse_basic_as_kong(value: str, expected: tuple[bytes, bytes] | None) -> None:
    assert parse_basic(value) == expected


def config_errors(plugin: dict[str, Any], **extra: Any) -> dict[str, Any]:
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.load({"_format_version": "3.0", "plugins": [plugin], **extra})
    return dict(info.value.fields["plugins"][0])


def test_schema_defaults_and_refusals() -> None:
    config = declarative.load({"_format_version": "3.0", "plugins": [{"name": "basic-auth"}]})
    assert config.of("plugins")[0]["config"] == {
        "anonymous": None,
        "hide_credentials": False,
        "realm": "service",
    }
    errors = config_errors({"name": "basic-auth", "config": {"hide_credentials": "yes", "realm": None}})
    assert errors == {"config": {"hide_credentials": "expected a boolean", "realm": "required field missing"}}
    errors = config_errors({"name": "basic-auth", "consumer": "bob"}, consumers=[{"username": "bob"}])
    assert errors == {"consumer": "value must be null"}
