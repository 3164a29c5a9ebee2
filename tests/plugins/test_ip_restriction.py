"""ip-restriction through the real proxy: allow and deny lists (IPv4, IPv6, CIDR), Kong's status
and message settings, the client address behind trusted proxies, a consumer-scoped instance;
the compiled lists and the client address on their own; the schema."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from data_plane.test_proxy_e2e import request, service
from harness.echo_upstream import EchoUpstream
from zonegate.core import declarative
from zonegate.core.errors import DeclarativeConfigError
from zonegate.data_plane.real_ip import parse_forwarded_address, real_client_ip
from zonegate.plugins.ip_restriction.handler import Networks, client_address

NOT_ALLOWED = "Your IP address is not allowed"


def restricted(name: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "paths": [f"/{name}"], "plugins": [{"name": "ip-restriction", "config": config}]}


def document(upstream: EchoUpstream) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "services": [
            {
                **service("svc", upstream),
                "routes": [
                    restricted("deny-local", deny=["127.0.0.1"]),
                    restricted("allow-local", allow=["127.0.0.0/8", "::1"]),
                    restricted("allow-other", allow=["10.0.0.0/8"], status=418, message="go away"),
                    restricted("both", allow=["127.0.0.0/8"], deny=["127.0.0.1/32"]),
                    restricted("v6", deny=["2001:db8::/32"]),
                    restricted("partner", allow=["203.0.113.0/24"]),
                    {
                        "name": "members",
                        "paths": ["/members"],
                        "plugins": [{"name": "key-auth"}],
                    },
                ],
            }
        ],
        "consumers": [
            {"username": "ok", "keyauth_credentials": [{"key": "ok-key"}]},
            {
                "username": "grounded",
                "keyauth_credentials": [{"key": "grounded-key"}],
                # Consumer-scoped: runs once key-auth (1250) has named the consumer (990 < 1250).
                "plugins": [{"name": "ip-restriction", "config": {"deny": ["127.0.0.0/8"]}}],
            },
        ],
    }


def test_ip_restriction_behind_a_trusted_proxy(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        document(echo_upstream),
        {"ZONEGATE_TRUSTED_IPS": "127.0.0.1", "ZONEGATE_REAL_IP_HEADER": "X-Forwarded-For"},
    )

    def answer(path: str, forwarded: str | None = None, **headers: str) -> tuple[int, Any]:
        if forwarded is not None:
            headers["X-Forwarded-For"] = forwarded
        status, _, body = request(node, "GET", path, headers=headers)
        return status, json.loads(body)

    status, body = answer("/deny-local/x")
    assert (status, body["message"]) == (403, NOT_ALLOWED) and "request_id" in body
    assert answer("/allow-local/x")[0] == 200
    status, body = answer("/allow-other/x")
    assert (status, body["message"]) == (418, "go away")
    assert answer("/both/x")[0] == 403  # deny is checked first

    # From a trusted peer, the address in real_ip_header is the client's (the last one).
    assert answer("/deny-local/x", "198.51.100.1")[0] == 200
    assert answer("/allow-other/x", "10.1.2.3")[0] == 200
    assert answer("/partner/x", "203.0.113.7")[0] == 200
    assert answer("/partner/x")[0] == 403
    assert answer("/partner/x", "203.0.113.7, 198.51.100.1")[0] == 403  # not recursive: the last
    assert answer("/partner/x", "198.51.100.1, 203.0.113.7:4321")[0] == 200  # a port is dropped
    assert answer("/partner/x", "not-an-ip")[0] == 403  # unreadable: the peer's own address
    # IPv6 clients.
    assert answer("/v6/x", "2001:db8::5")[0] == 403
    assert answer("/v6/x", "[2001:db8:0:1::9]:443")[0] == 403
    assert answer("/v6/x", "2001:db9::1")[0] == 200

    # A consumer-scoped instance applies to that consumer only.
    assert answer("/members/x", apikey="ok-key")[0] == 200
    status, body = answer("/members/x", apikey="grounded-key")
    assert (status, body["message"]) == (403, NOT_ALLOWED)


def test_ip_restriction_ignores_forwarded_addresses_from_untrusted_peers(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(document(echo_upstream), {"ZONEGATE_REAL_IP_HEADER": "X-Forwarded-For"})
    status, _, body = request(node, "GET", "/deny-local/x", headers={"X-Forwarded-For": "198.51.100.1"})
    assert (status, json.loads(body)["message"]) == (403, NOT_ALLOWED)
    assert request(node, "GET", "/partner/x", headers={"X-Forwarded-For": "203.0.113.7"})[0] == 403


def test_compiled_lists() -> None:
    networks = Networks(["10.0.0.1", "192.168.0.0/16", "10.1.2.3/8", "2001:db8::/32", "::1"])
    inside = ("10.0.0.1", "10.200.0.1", "192.168.4.4", "2001:db8::1", "::1")
    outside = ("11.0.0.1", "192.169.0.1", "2001:db9::1", "::2")
    for text in inside:
        assert ipaddress.ip_address(text) in networks, text
    for text in outside:
        assert ipaddress.ip_address(text) not in networks, text
    # An IPv4 client on a dual-stack socket is matched as IPv4.
    assert client_address("::ffff:192.168.1.1") == ipaddress.ip_address("192.168.1.1")
    assert client_address("unix:") is None


TRUSTED = {"127.0.0.1", "10.0.0.1", "10.0.0.2"}


@pytest.mark.parametrize(
    ("peer", "header", "recursive", "expected"),
    [
        ("127.0.0.1", None, False, "127.0.0.1"),
        ("127.0.0.1", "1.1.1.1", False, "1.1.1.1"),
        ("8.8.8.8", "1.1.1.1", False, "8.8.8.8"),  # an untrusted peer is not believed
        ("127.0.0.1", "1.1.1.1, 10.0.0.1", False, "10.0.0.1"),
        ("127.0.0.1", "1.1.1.1, 10.0.0.1, 10.0.0.2", True, "1.1.1.1"),
        ("127.0.0.1", "10.0.0.2,10.0.0.1", True, "10.0.0.2"),  # all trusted: the leftmost
        ("127.0.0.1", "1.1.1.1, 2.2.2.2, 10.0.0.1", True, "2.2.2.2"),  # stops at the first untrusted
        ("127.0.0.1", "1.1.1.1, junk, 10.0.0.1", True, "10.0.0.1"),  # unreadable: keeps what it had
        ("127.0.0.1", "junk", False, "127.0.0.1"),
        ("127.0.0.1", "[2001:db8::1]:80", False, "2001:db8::1"),
    ],
)
def test_real_client_ip(peer: str, header: str | None, recursive: bool, expected: str) -> None:
    assert real_client_ip(peer, header, TRUSTED.__contains__, recursive) == expected


def test_forwarded_address_forms() -> None:
    assert parse_forwarded_address("1.2.3.4:80") == "1.2.3.4"
    assert parse_forwarded_address("::1") == "::1"
    assert parse_forwarded_address("[::1") is None
    assert parse_forwarded_address("example.com") is None


def config_errors(config: dict[str, Any] | None) -> dict[str, Any]:
    plugin: dict[str, Any] = {"name": "ip-restriction"}
    if config is not None:
        plugin["config"] = config
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.load({"_format_version": "3.0", "plugins": [plugin]})
    return dict(info.value.fields["plugins"][0])


def test_schema_defaults_and_refusals() -> None:
    loaded = declarative.load(
        {"_format_version": "3.0", "plugins": [{"name": "ip-restriction", "config": {"allow": ["::1"]}}]}
    )
    assert loaded.of("plugins")[0]["config"] == {
        "allow": ["::1"],
        "deny": None,
        "status": None,
        "message": None,
    }
    none = "at least one of these fields must be non-empty: 'config.allow', 'config.deny'"
    assert config_errors(None) == {"@entity": [none]}
    assert config_errors({"deny": []}) == {"@entity": [none]}
    assert config_errors({"allow": ["1.2.3.4", "10.0.0.0/33", "nope"]}) == {
        "config": {
            "allow": [None, "invalid ip or cidr range: '10.0.0.0/33'", "invalid ip or cidr range: 'nope'"]
        }
    }
    assert config_errors({"deny": ["1.2.3.4"], "status": 99.5}) == {
        "config": {"status": "value should be between 100 and 599"}
    }
    assert config_errors({"deny": ["1.2.3.4"], "status": "403"}) == {
        "config": {"status": "expected a number"}
    }
