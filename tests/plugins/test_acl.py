"""acl through the real proxy (Kong's ``spec/03-plugins/18-acl/02-access_spec.lua`` cases), with
Kong's precedence between a route and a service instance; authenticated groups (set by auth
plugins such as LDAP, none of which is bundled yet) on the handler directly; the schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from data_plane.test_proxy_e2e import echo, request, service
from harness.echo_upstream import EchoUpstream
from zonegate.core import declarative
from zonegate.core.entities import plugins
from zonegate.core.errors import DeclarativeConfigError, SchemaViolation
from zonegate.plugins.acl.handler import Acl
from zonegate.plugins.api import Exit, PluginContext
from zonegate.plugins.chains import ConfigIndexes

FORBIDDEN = "You cannot consume this service"
ZONEGATE = Path(sys.executable).with_name("zonegate")


def seen(body: bytes) -> dict[str, str]:
    return dict(echo(body)["headers_lower"])


def acl_route(name: str, auth: bool = True, **config: Any) -> dict[str, Any]:
    plugins = [{"name": "acl", "config": config}]
    if auth:
        plugins.append({"name": "key-auth"})
    return {"name": name, "paths": [f"/{name}"], "plugins": plugins}


def test_acl(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    **service("svc", echo_upstream),
                    "routes": [
                        acl_route("allow-admin", allow=["admin"]),
                        acl_route("allow-b", allow=["b", "zzz"]),
                        acl_route("deny-admin", deny=["admin"]),
                        acl_route("hidden", allow=["admin"], hide_groups_header=True),
                        acl_route("noauth", auth=False, allow=["admin"]),
                        {
                            "name": "anon",
                            "paths": ["/anon"],
                            "plugins": [
                                {"name": "acl", "config": {"allow": ["guests"]}},
                                {"name": "key-auth", "config": {"anonymous": "anon"}},
                            ],
                        },
                    ],
                },
                {
                    # Precedence: the service allows users; one of its routes allows admins only.
                    **service("scoped", echo_upstream),
                    "plugins": [{"name": "acl", "config": {"allow": ["user"]}}, {"name": "key-auth"}],
                    "routes": [
                        {"name": "svc-level", "paths": ["/svc-level"]},
                        {
                            "name": "route-level",
                            "paths": ["/route-level"],
                            "plugins": [{"name": "acl", "config": {"allow": ["admin"]}}],
                        },
                    ],
                },
            ],
            "consumers": [
                {
                    "username": "admin",
                    "keyauth_credentials": [{"key": "admin-key"}],
                    "acls": [{"group": "admin"}],
                },
                {
                    "username": "user",
                    "keyauth_credentials": [{"key": "user-key"}],
                    "acls": [{"group": "user"}],
                },
                {"username": "nogroup", "keyauth_credentials": [{"key": "ng-key"}]},
                {
                    "username": "multi",
                    "keyauth_credentials": [{"key": "multi-key"}],
                    "acls": [{"group": "a"}, {"group": "b"}],
                },
                {"username": "anon", "acls": [{"group": "guests"}]},
            ],
        }
    )

    def get(path: str, key: str | None = None, **headers: str) -> tuple[int, Any]:
        if key is not None:
            headers["apikey"] = key
        status, _, body = request(node, "GET", path, headers=headers)
        return status, json.loads(body)

    def refused(path: str, key: str | None, status: int = 403, message: str = FORBIDDEN) -> None:
        code, body = get(path, key)
        assert (code, body["message"]) == (status, message), (path, key)
        assert "request_id" in body  # Kong's error body

    # allow: the group goes upstream in X-Consumer-Groups; anyone else is refused.
    status, body = get("/allow-admin/x", "admin-key")
    assert (status, body["headers_lower"]["x-consumer-groups"]) == (200, "admin")
    refused("/allow-admin/x", "user-key")
    refused("/allow-admin/x", "ng-key")  # a consumer without any group
    status, body = get("/allow-b/x", "multi-key")
    assert status == 200
    assert sorted(body["headers_lower"]["x-consumer-groups"].split(", ")) == ["a", "b"]

    # deny: the group is refused; everyone else passes, with a client's forged header replaced.
    refused("/deny-admin/x", "admin-key")
    status, body = get("/deny-admin/x", "user-key", **{"X-Consumer-Groups": "admin"})
    assert (status, body["headers_lower"]["x-consumer-groups"]) == (200, "user")
    status, body = get("/deny-admin/x", "ng-key")
    assert (status, body["headers_lower"]["x-consumer-groups"]) == (200, "")

    # hide_groups_header: no groups header upstream, not even one the client sent.
    status, body = get("/hidden/x", "admin-key", **{"X-Consumer-Groups": "forged"})
    assert status == 200 and "x-consumer-groups" not in body["headers_lower"]

    # No authentication plugin, no consumer: 401.
    refused("/noauth/x", None, 401, "Unauthorized")
    # The anonymous consumer is checked with its own groups.
    status, body = get("/anon/x")
    assert status == 200
    assert body["headers_lower"]["x-consumer-username"] == "anon"
    assert body["headers_lower"]["x-consumer-groups"] == "guests"
    refused("/anon/x", "admin-key")

    # Kong's precedence: the route's instance replaces the service's on that route only.
    assert get("/svc-level/x", "user-key")[0] == 200
    refused("/svc-level/x", "admin-key")
    assert get("/route-level/x", "admin-key")[0] == 200
    refused("/route-level/x", "user-key")


class FakeRequest:
    """Just what the acl handler touches of a request."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.query_bytes = b""


def run(
    acl: Acl, consumer: Any, credential: bool, groups: list[str] | None
) -> tuple[Exit | None, dict[bytes, bytes]]:
    request = FakeRequest()
    ctx = PluginContext(request, {}, None)  # type: ignore[arg-type]
    ctx.authenticate(consumer, {"id": "a-credential"} if credential else None)
    ctx.authenticated_groups = groups
    result = acl.access(ctx)
    assert result is None or isinstance(result, Exit)
    return result, dict(request.headers)


@pytest.mark.parametrize(
    ("config", "consumer", "credential", "groups", "expected"),
    [
        # No consumer: the authenticated groups decide, sent as X-Authenticated-Groups.
        ({"allow": ["admin"]}, False, False, ["admin"], ("X-Authenticated-Groups", "admin")),
        ({"allow": ["admin"]}, False, False, [], 403),  # an empty list is still a list
        ({"allow": ["admin"]}, False, True, None, 403),  # a credential, but nothing to check
        ({"allow": ["admin"]}, False, False, None, 401),
        # An authenticated consumer: its own groups, unless always_use_authenticated_groups.
        ({"allow": ["admin"]}, True, True, ["admin"], 403),
        ({"allow": ["user"]}, True, True, ["admin"], ("X-Consumer-Groups", "user")),
        (
            {"allow": ["admin"], "always_use_authenticated_groups": True},
            True,
            True,
            ["admin"],
            ("X-Authenticated-Groups", "admin"),
        ),
        (  # ... falling back to the consumer's groups when there are none
            {"allow": ["user"], "always_use_authenticated_groups": True},
            True,
            True,
            None,
            ("X-Consumer-Groups", "user"),
        ),
        # The anonymous consumer (no credential): authenticated groups first, then its own.
        ({"allow": ["admin"]}, True, False, ["admin"], ("X-Authenticated-Groups", "admin")),
        ({"deny": ["user"]}, True, False, None, 403),
    ],
)
def test_authenticated_groups(
    config: dict[str, Any], consumer: bool, credential: bool, groups: list[str] | None, expected: Any
) -> None:
    loaded = declarative.load(
        {
            "_format_version": "3.0",
            "consumers": [{"username": "carol", "acls": [{"group": "user"}]}],
            "plugins": [{"name": "acl", "config": config}],
        }
    )
    acl = Acl(loaded.of("plugins")[0], ConfigIndexes(loaded))
    carol = loaded.of("consumers")[0] if consumer else None
    result, headers = run(acl, carol, credential, groups)
    if isinstance(expected, int):
        assert result is not None and result.status == expected
    else:
        assert result is None and headers == {expected[0].encode(): expected[1].encode()}


def config_errors(config: dict[str, Any] | None) -> dict[str, Any]:
    plugin: dict[str, Any] = {"name": "acl"} if config is None else {"name": "acl", "config": config}
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.load({"_format_version": "3.0", "plugins": [plugin]})
    return dict(info.value.fields["plugins"][0])


def test_schema_defaults_and_refusals() -> None:
    config = declarative.load(
        {"_format_version": "3.0", "plugins": [{"name": "acl", "config": {"deny": ["x"]}}]}
    )
    assert config.of("plugins")[0]["config"] == {
        "allow": None,
        "deny": ["x"],
        "hide_groups_header": False,
        "always_use_authenticated_groups": False,
    }
    both = "only one of these fields must be non-empty: 'config.allow', 'config.deny'"
    none = "at least one of these fields must be non-empty: 'config.allow', 'config.deny'"
    assert config_errors({"allow": ["a"], "deny": ["b"]}) == {"@entity": [both]}
    assert config_errors(None) == {"@entity": [none]}
    assert config_errors({"allow": []}) == {"@entity": [none]}  # empty counts as unset, as in Kong
    assert config_errors({"allow": "admin"}) == {"config": {"allow": "expected an array"}}


def test_admin_api_error_body_is_kongs() -> None:
    with pytest.raises(SchemaViolation) as info:
        plugins.SCHEMA.validate({"name": "acl", "config": {"allow": ["a"], "deny": ["b"]}})
    both = "only one of these fields must be non-empty: 'config.allow', 'config.deny'"
    assert info.value.body() == {
        "code": 2,
        "name": "schema violation",
        "message": f"schema violation ({both})",
        "fields": {"@entity": [both]},
    }


def test_config_parse_locates_plugin_errors(tmp_path: Path) -> None:
    path = tmp_path / "kong.yml"
    path.write_text(
        '_format_version: "3.0"\n'
        "plugins:\n"
        "  - name: acl\n"
        "  - name: ip-restriction\n"
        "    config: {allow: [10.0.0.300]}\n"
        "  - name: jwt\n"
        "    config: {maximum_expiration: 60, claims_to_verify: [nbf]}\n"
        "  - name: basic-auth\n"
        "    config: {realm: null}\n"
    )
    result = subprocess.run(
        [str(ZONEGATE), "config", "parse", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    for line in (
        "plugins[0]: at least one of these fields must be non-empty: 'config.allow', 'config.deny'",
        "plugins[1].config.allow[0]: invalid ip or cidr range: '10.0.0.300'",
        "plugins[2]: failed conditional validation given value of field 'config.maximum_expiration'",
        "plugins[2].config.claims_to_verify: expected to contain: exp",
        "plugins[3].config.realm: required field missing",
    ):
        assert line in result.stderr, result.stderr
