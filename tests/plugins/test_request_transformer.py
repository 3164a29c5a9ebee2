"""request-transformer through the real proxy: headers, query string and body (JSON and form,
buffered or chunked, Expect: 100-continue) in Kong's order and with its quirks, http_method,
replace.uri and templates; and its schema."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import pytest

from data_plane.test_proxy_e2e import echo, request, service
from data_plane.test_proxy_more_e2e import RawClient
from harness.echo_upstream import EchoUpstream
from zonegate.core import declarative
from zonegate.core.errors import DeclarativeConfigError
from zonegate.plugins.request_transformer.handler import decode_args, encode_args

TEMPLATED_URI = "/v2/$(uri_captures.user)/$(uri_captures[2])$(query_params.tail)"
BODY_OPS = {
    "remove": {"body": ["secret"]},
    "rename": {"body": ["user:username"]},
    "replace": {"body": ["role:admin", "absent:x"]},
    "add": {"body": ["added:yes", "present:no"]},
    "append": {"body": ["tags:new"]},
}


def transformed(name: str, config: dict[str, Any], **route: Any) -> dict[str, Any]:
    return {
        "name": name,
        "paths": [f"/{name}"],
        "plugins": [{"name": "request-transformer", "config": config}],
        **route,
    }


@pytest.fixture
def node(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> Any:
    return zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    **service("svc", echo_upstream),
                    "routes": [
                        transformed(
                            "hdr",
                            {
                                "remove": {"headers": ["X-Remove", "Host"]},
                                "rename": {"headers": ["X-Old:X-New", "X-Ghost:X-Target"]},
                                "replace": {"headers": ["X-Replace:replaced", "X-Absent:no"]},
                                "add": {"headers": ["X-Added:added", "X-Present:not-added"]},
                                "append": {"headers": ["X-Multi:appended", "X-Fresh:fresh"]},
                            },
                        ),
                        transformed("host", {"replace": {"headers": ["Host:rewritten.test"]}}),
                        transformed(
                            "qs",
                            {
                                "remove": {"querystring": ["drop"]},
                                "rename": {"querystring": ["old:new", "ghost:target"]},
                                "replace": {"querystring": ["rep:replaced", "nothere:x"]},
                                "add": {"querystring": ["added:1", "keep:no"]},
                                "append": {"querystring": ["multi:3", "fresh:f"]},
                            },
                        ),
                        transformed("body", BODY_OPS),
                        transformed(
                            "authed",
                            BODY_OPS,
                            plugins=[
                                {"name": "key-auth"},
                                {"name": "request-transformer", "config": BODY_OPS},
                            ],
                        ),
                        transformed("method", {"http_method": "GET"}),
                        {
                            "name": "tpl",
                            "paths": [r"~/users/(?<user>\d+)/(\w+)$"],
                            "plugins": [
                                {
                                    "name": "request-transformer",
                                    "config": {
                                        "replace": {"uri": TEMPLATED_URI},
                                        "add": {
                                            "headers": ["X-Tpl:$(headers.x_in or 'none')-$(query_params.q)"],
                                            "querystring": ['from_header:$(headers["X-In"])'],
                                        },
                                    },
                                }
                            ],
                        },
                    ],
                }
            ],
            "consumers": [{"username": "ann", "keyauth_credentials": [{"key": "ann-key"}]}],
        }
    )


def test_headers(node: Any) -> None:
    status, _, body = request(
        node,
        "GET",
        "/hdr",
        headers={
            "X-Remove": "1",
            "X-Old": "old-value",
            "X-Replace": "orig",
            "X-Present": "orig",
            "X-Multi": "one",
        },
    )
    seen = echo(body)["headers_lower"]
    assert status == 200
    assert "x-remove" not in seen and seen["host"].startswith("127.0.0.1")  # Host is not removable
    assert seen["x-new"] == "old-value" and "x-old" not in seen
    assert "x-target" not in seen  # renaming an absent header does nothing
    assert seen["x-replace"] == "replaced" and "x-absent" not in seen
    assert seen["x-added"] == "added" and seen["x-present"] == "orig"
    assert seen["x-multi"] == "one, appended" and seen["x-fresh"] == "fresh"

    seen = echo(request(node, "GET", "/host")[2])["headers_lower"]
    assert seen["host"] == "rewritten.test"


def test_querystring(node: Any) -> None:
    _, _, body = request(node, "GET", "/qs?drop=1&old=o&target=t&rep=r&keep=k&multi=1&multi=2&flag&sp=a+b")
    # Re-encoded with sorted names; renaming an absent name removes the target (Kong's quirk).
    assert (
        echo(body)["query"]
        == "added=1&flag&fresh=f&keep=k&multi=1&multi=2&multi=3&new=o&rep=replaced&sp=a%20b"
    )
    assert echo(request(node, "GET", "/qs")[2])["query"] == "added=1&fresh=f&keep=no&multi=3"


def test_json_and_form_bodies(node: Any, echo_upstream: EchoUpstream) -> None:
    def post(path: str, content_type: str, body: bytes, **headers: str) -> dict[str, Any]:
        status, _, answer = request(
            node, "POST", path, headers={"Content-Type": content_type, **headers}, body=body
        )
        assert status == 200, answer
        return echo(answer)

    document = {"secret": "s", "user": "u", "role": "r", "present": "p", "tags": "old", "n": 1}
    seen = post("/body", "application/json; charset=utf-8", json.dumps(document).encode())
    assert json.loads(seen["body"]) == {
        "username": "u",
        "role": "admin",
        "present": "p",
        "tags": ["old", "new"],
        "n": 1,
        "added": "yes",
    }
    assert seen["headers_lower"]["content-length"] == str(len(seen["body"]))

    seen = post("/body", "application/x-www-form-urlencoded", b"secret=s&user=u&role=r&tags=a&tags=b&x=a+b")
    assert parse_qsl(seen["body"]) == [
        ("role", "admin"),
        ("tags", "a"),
        ("tags", "b"),
        ("tags", "new"),
        ("x", "a b"),
        ("username", "u"),
        ("added", "yes"),
        ("present", "no"),
    ]
    # An empty body: only add and append apply.
    seen = post("/body", "application/json", b"")
    assert json.loads(seen["body"]) == {"added": "yes", "present": "no", "tags": ["new"]}
    # What cannot be parsed, or is not a form or JSON, is left alone.
    assert post("/body", "application/json", b"not json")["body"] == "not json"
    assert post("/body", "application/json", b"[1, 2]")["body"] == "[1, 2]"
    assert post("/body", "text/plain", b"secret=s")["body"] == "secret=s"
    # Larger than the proxy buffers (1 MiB): sent untouched.
    big = json.dumps({"secret": "s" * (1 << 20)}).encode()
    assert post("/body", "application/json", big)["body"] == big.decode()

    # A chunked body, after Expect: 100-continue: read whole, edited, sent with a Content-Length.
    with RawClient(node.proxy_port) as client:
        client.send(
            b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        )
        assert client.head()[0] == 100
        client.send(b'5\r\n{"sec\r\n')
        client.send(b'a\r\nret": "s"}\r\n0\r\n\r\n')
        response = client.response()
        assert response.status == 200
        seen = echo(response.body)
        assert json.loads(seen["body"]) == {"added": "yes", "present": "no", "tags": ["new"]}
        assert "transfer-encoding" not in seen["headers_lower"]

    # After an earlier plugin: the chain goes on once the body is in.
    body = json.dumps({"user": "u"}).encode()
    status, _, answer = request(
        node, "POST", "/authed", headers={"Content-Type": "application/json", "apikey": "ann-key"}, body=body
    )
    assert status == 200 and json.loads(echo(answer)["body"])["username"] == "u"
    assert echo(answer)["headers_lower"]["x-consumer-username"] == "ann"
    status, _, _ = request(node, "POST", "/authed", headers={"Content-Type": "application/json"}, body=body)
    assert status == 401


def test_method_uri_and_templates(node: Any) -> None:
    status, _, body = request(
        node,
        "POST",
        "/method?a=0",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=b"a=1&b=2",
    )
    seen = echo(body)
    assert status == 200 and seen["method"] == "GET"
    assert seen["query"] == "a=0&a=1&b=2"  # a form body joins the query when the method has none
    assert seen["body"] == "a=1&b=2"

    seen = echo(request(node, "GET", "/users/42/profile?q=z", headers={"X-In": "hi"})[2])
    assert seen["path"] == "/v2/42/profile"
    assert seen["headers_lower"]["x-tpl"] == "hi-z"
    assert seen["query"] == "from_header=hi&q=z"
    seen = echo(request(node, "GET", "/users/7/x")[2])
    assert seen["path"] == "/v2/7/x" and seen["headers_lower"]["x-tpl"] == "none-"
    assert seen["query"] == "from_header="
    # A value from the client cannot end the header line (no header injection upstream).
    seen = echo(request(node, "GET", "/users/7/x?q=a%0D%0AEvil:%20x")[2])
    assert seen["headers_lower"]["x-tpl"] == "none-a%0D%0AEvil: x" and "evil" not in seen["headers_lower"]
    # ...nor break the request line: a rendered path is escaped.
    seen = echo(request(node, "GET", "/users/7/x?tail=%20HTTP/1.1%0D%0AX:%20y")[2])
    assert seen["target"].startswith("/v2/7/x%20HTTP/1.1%0D%0AX:%20y?")


def test_args_codec() -> None:
    assert decode_args("a=1&a=2&flag&e=&sp=a+b%21&=x&") == {
        "a": ["1", "2"],
        "flag": True,
        "e": "",
        "sp": "a b!",
    }
    assert encode_args({"z": "1", "a": [True, "x y"], "f": False, "e": ""}, sort=True) == "a&a=x%20y&e=&z=1"


def config_errors(config: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.load(
            {"_format_version": "3.0", "plugins": [{"name": "request-transformer", "config": config}]}
        )
    return dict(info.value.fields["plugins"][0])


def test_schema_defaults_and_refusals() -> None:
    loaded = declarative.load({"_format_version": "3.0", "plugins": [{"name": "request-transformer"}]})
    three = {"body": [], "headers": [], "querystring": []}
    assert loaded.of("plugins")[0]["config"] == {
        "http_method": None,
        "remove": three,
        "rename": three,
        "replace": {**three, "uri": None},
        "add": three,
        "append": three,
    }
    assert config_errors(
        {
            "http_method": "get",
            "remove": {"headers": ["bad name"]},
            "rename": {"headers": ["a:b c"], "body": ["novalue"]},
            "replace": {"uri": "$(headers)"},
            "add": {"headers": ["X:", "x", "X-Ok:fine"], "querystring": ["q:$(os.exit())"]},
        }
    ) == {
        "config": {
            "http_method": "invalid value: get",
            "remove": {"headers": ["'bad name' is not a valid header"]},
            "rename": {"headers": ["'b c' is not a valid header"], "body": ["key 'novalue' has no value"]},
            "replace": {
                "uri": "value '$(headers)' is not in supported format, error:unexpected end of expression"
            },
            "add": {
                "headers": ["'' is not a valid header", "invalid value: x", None],
                "querystring": [
                    "value '$(os.exit())' is not in supported format, error:unsupported expression 'os'"
                ],
            },
        }
    }
