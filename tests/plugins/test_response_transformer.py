"""response-transformer through the real proxy: headers in Kong's order with its snapshot rules,
the JSON body (json_types, Content-Length fixed, chunked upstreams, the size limit), plugin exits
and proxy errors transformed too; and its schema."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from data_plane.test_proxy_e2e import service
from data_plane.test_proxy_more_e2e import closed_port
from harness.echo_upstream import EchoUpstream, filler
from zonegate.core import declarative
from zonegate.core.errors import DeclarativeConfigError
from zonegate.plugins.response_transformer.handler import json_value, transform_json


def fetch(
    node: Any, method: str, path: str, headers: list[tuple[str, str]] | None = None, body: bytes | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    """A request whose response keeps repeated headers (and whose Content-Length is checked)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=15)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers or []:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        found = [(k.lower(), v) for k, v in response.getheaders()]
        length = dict(found).get("content-length")
        assert method == "HEAD" or length is None or int(length) == len(data)
        return response.status, found, data
    finally:
        conn.close()


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k == name]


def transformed(name: str, config: dict[str, Any], **route: Any) -> dict[str, Any]:
    return {
        "name": name,
        "paths": [f"/{name}"],
        "plugins": [{"name": "response-transformer", "config": config}],
        **route,
    }


JSON_CONFIG = {
    "remove": {"json": ["connection", "client"]},
    "rename": {"json": ["method:verb"]},
    "replace": {"json": ["upstream:replaced", "missing:x"]},
    "add": {
        "json": ["added:1", "num:42", "flag:true", "upstream:no"],
        "json_types": ["string", "number", "boolean"],
    },
    "append": {"json": ["path:extra", "list:v"]},
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
                            "headers",
                            {
                                "remove": {"headers": ["X-Remove-Me", "x-echo-connection"]},
                                "rename": {"headers": ["X-Old:X-New", "X-Echo-Upstream:X-Upstream-Name"]},
                                "replace": {"headers": ["X-Replace:replaced", "X-Absent:nope"]},
                                "add": {"headers": ["X-Added:yes", "X-Echo-Request:not-added"]},
                                "append": {"headers": ["X-Multi:three", "X-Appended:a"]},
                            },
                        ),
                        transformed(
                            "snapshot",
                            {
                                # rename/replace/add test the headers as they came, before remove.
                                "remove": {"headers": ["X-Gone", "X-Kept"]},
                                "add": {"headers": ["X-Gone:back"]},
                                "replace": {"headers": ["X-Kept:again"]},
                            },
                        ),
                        transformed("json", JSON_CONFIG),
                        transformed(
                            "forced",  # the echo's ndjson declared JSON, so chunked bodies get edited
                            {
                                "replace": {"headers": ["Content-Type:application/json"]},
                                "add": {"json": ["extra:1"]},
                            },
                        ),
                        transformed(
                            "ended",
                            {"add": {"json": ["added:x"], "headers": ["X-Added:1"]}},
                            plugins=[
                                {
                                    "name": "request-termination",
                                    "config": {"status_code": 403, "message": "nope"},
                                },
                                {
                                    "name": "response-transformer",
                                    "config": {"add": {"json": ["added:x"], "headers": ["X-Added:1"]}},
                                },
                            ],
                        ),
                    ],
                },
                {
                    "name": "dead",
                    "url": f"http://127.0.0.1:{closed_port()}",
                    "retries": 0,
                    "routes": [transformed("dead", {"add": {"json": ["added:x"], "headers": ["X-Added:1"]}})],
                },
            ],
        }
    )


def test_headers_in_kongs_order(node: Any) -> None:
    steer = [
        ("X-Echo-Response-Header", "X-Remove-Me: 1"),
        ("X-Echo-Response-Header", "X-Old: old-value"),
        ("X-Echo-Response-Header", "X-Replace: original"),
        ("X-Echo-Response-Header", "X-Multi: one"),
        ("X-Echo-Response-Header", "X-Multi: two"),
    ]
    status, headers, body = fetch(node, "GET", "/headers", steer)
    found = dict(headers)
    assert status == 200 and json.loads(body)["method"] == "GET"  # no JSON operations: body as is
    assert "x-remove-me" not in found and "x-echo-connection" not in found
    assert found["x-new"] == "old-value" and "x-old" not in found
    assert found["x-upstream-name"] == "echo" and "x-echo-upstream" not in found
    assert found["x-replace"] == "replaced" and "x-absent" not in found
    assert found["x-added"] == "yes" and values(headers, "x-echo-request") == ["1"]
    assert values(headers, "x-multi") == ["one", "two", "three"]
    assert found["x-appended"] == "a"

    steer = [("X-Echo-Response-Header", "X-Gone: 1"), ("X-Echo-Response-Header", "X-Kept: 1")]
    found = dict(fetch(node, "GET", "/snapshot", steer)[1])
    assert "x-gone" not in found  # it was there when the response came: add does not bring it back
    assert found["x-kept"] == "again"  # and replace does
    assert dict(fetch(node, "GET", "/snapshot")[1])["x-gone"] == "back"  # never there: added


def test_json_body(node: Any) -> None:
    status, headers, body = fetch(node, "GET", "/json?q=1", [("X-Echo-Status", "404")])
    document = json.loads(body)
    assert status == 404  # every status, as Kong's body_filter
    assert "connection" not in document and "client" not in document
    assert document["verb"] == "GET" and "method" not in document
    assert document["upstream"] == "replaced" and "missing" not in document
    assert (document["added"], document["num"], document["flag"]) == ("1", 42, True)
    assert document["path"] == ["/", "extra"] and document["list"] == ["v"]
    assert document["query"] == "q=1"  # untouched keys keep their values
    assert dict(headers)["content-type"] == "application/json"

    # HEAD: headers only, and the connection stays usable.
    assert fetch(node, "HEAD", "/json")[0] == 200
    # Not JSON: untouched.
    status, headers, body = fetch(node, "GET", "/json", [("X-Echo-Body-Size", "100")])
    assert body == filler(100)
    # Larger than the proxy's buffer (1 MiB): streamed untouched.
    big = b"b" * (1 << 20)
    status, headers, body = fetch(node, "POST", "/json", body=big)
    document = json.loads(body)
    assert status == 200 and document["method"] == "POST" and "verb" not in document
    assert len(document["body"]) == len(big)

    # A chunked upstream body is held whole, edited and sent with a Content-Length.
    status, headers, body = fetch(node, "GET", "/forced", [("X-Echo-Stream", "1")])
    assert json.loads(body) == {"chunk": 0, "total": 1, "extra": "1"}
    assert "transfer-encoding" not in dict(headers) and dict(headers)["content-length"] == str(len(body))
    # Not a JSON object: untouched (Kong logs and sends it as it came).
    status, headers, body = fetch(node, "GET", "/forced", [("X-Echo-Stream", "2")])
    assert [json.loads(line)["chunk"] for line in body.splitlines()] == [0, 1]
    # Chunked and past the buffer while it streams in: sent untouched, still chunked.
    status, headers, body = fetch(
        node, "GET", "/forced", [("X-Echo-Stream", "4"), ("X-Echo-Body-Size", str(3 << 19))]
    )
    assert body == filler(3 << 19) and dict(headers)["transfer-encoding"] == "chunked"


def test_plugin_exits_and_proxy_errors_are_transformed(node: Any) -> None:
    status, headers, body = fetch(node, "GET", "/ended")
    assert status == 403 and json.loads(body) == {"message": "nope", "added": "x"}
    assert dict(headers)["x-added"] == "1"
    status, headers, body = fetch(node, "GET", "/dead")
    document = json.loads(body)
    assert (
        status == 502 and document["added"] == "x" and document["message"].startswith("An invalid response")
    )
    assert dict(headers)["x-added"] == "1"


def test_json_values_as_kong_casts_them() -> None:
    assert json_value("a/b", None) == "a/b"
    assert json_value('say "hi"', "string") == 'say "hi"'
    assert json_value("a\\b", None) == "a\\\\b"  # cjson's escaping kept, as in Kong
    assert json_value("0x10", "number") == 16 and json_value("1e3", "number") == 1000
    assert json_value("1.5", "number") == 1.5 and json_value("nope", "number") is None
    assert json_value("true", "boolean") is True and json_value("yes", "boolean") is False
    assert json_value(None, None) == "null"
    ops: dict[str, Any] = {
        "remove": (),
        "rename": (("a", "a", None),),
        "replace": (("f", "r", None),),
        "add": (("f", "added", None), ("n", "added", None)),
        "append": (),
    }
    # Renaming to the same name removes it; a false value is absent to add and replace.
    assert json.loads(transform_json(ops, b'{"a": 1, "f": false, "n": null}') or b"") == {
        "f": "added",
        "n": None,
    }
    assert transform_json(ops, b"[1, 2]") is None and transform_json(ops, b"not json") is None


def config_errors(config: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.load(
            {"_format_version": "3.0", "plugins": [{"name": "response-transformer", "config": config}]}
        )
    return dict(info.value.fields["plugins"][0])


def test_schema_defaults_and_refusals() -> None:
    loaded = declarative.load({"_format_version": "3.0", "plugins": [{"name": "response-transformer"}]})
    with_types = {"json": [], "json_types": [], "headers": []}
    assert loaded.of("plugins")[0]["config"] == {
        "remove": {"json": [], "headers": []},
        "rename": {"json": [], "headers": []},
        "replace": with_types,
        "add": with_types,
        "append": with_types,
    }
    assert config_errors(
        {
            "add": {
                "headers": ["novalue", "bad name:v", "X-Ok:", "X-Ok:v"],
                "json": ["x"],
                "json_types": ["int"],
            },
            "rename": {"headers": ["a:b c"]},
        }
    ) == {
        "config": {
            "add": {
                "headers": [
                    "invalid value: novalue",
                    "'bad name' is not a valid header",
                    "'' is not a valid header",
                    None,
                ],
                "json": ["invalid value: x"],
                "json_types": ["expected one of: boolean, number, string"],
            },
            "rename": {"headers": ["'b c' is not a valid header"]},
        }
    }
