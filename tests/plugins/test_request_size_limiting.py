"""request-size-limiting through the real proxy: Content-Length checked at once in each unit,
chunked bodies counted while they arrive (buffered or streamed), 417 after Expect: 100-continue,
411 with require_content_length; and its schema."""

from __future__ import annotations

import json
from typing import Any

import pytest

from data_plane.test_proxy_e2e import echo, request, service
from data_plane.test_proxy_more_e2e import RawClient
from harness.echo_upstream import EchoUpstream
from zonegate.core import declarative
from zonegate.core.errors import DeclarativeConfigError

EXCEEDED = "Request size limit exceeded"


def limited(name: str, config: dict[str, Any], **route: Any) -> dict[str, Any]:
    return {
        "name": name,
        "paths": [f"/{name}"],
        "plugins": [{"name": "request-size-limiting", "config": config}],
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
                        limited("default", {}),
                        limited("bytes", {"allowed_payload_size": 10, "size_unit": "bytes"}),
                        limited("kilo", {"allowed_payload_size": 1, "size_unit": "kilobytes"}),
                        limited("mega", {"allowed_payload_size": 2}),
                        limited(
                            "streamed",
                            {"allowed_payload_size": 1, "size_unit": "kilobytes"},
                            request_buffering=False,
                        ),
                        limited(
                            "required",
                            {
                                "allowed_payload_size": 10,
                                "size_unit": "bytes",
                                "require_content_length": True,
                            },
                        ),
                    ],
                }
            ],
        }
    )


def chunked(client: RawClient, path: str, chunks: list[bytes], *, expect: bool = False) -> Any:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    client.send((head + ("Expect: 100-continue\r\n" if expect else "") + "\r\n").encode())
    if expect:
        assert client.head()[0] == 100  # the proxy asks for the body, as nginx does for Kong
    for chunk in chunks:
        client.send(b"%x\r\n%b\r\n" % (len(chunk), chunk))
    return client


def test_content_length_is_checked_in_each_unit(node: Any, echo_upstream: EchoUpstream) -> None:
    assert request(node, "POST", "/bytes", body=b"x" * 10)[0] == 200
    status, headers, body = request(node, "POST", "/bytes", body=b"x" * 11)
    assert (status, json.loads(body)["message"]) == (413, EXCEEDED)
    assert headers["connection"] == "close"  # the unread body cannot stay on the connection
    assert request(node, "POST", "/kilo", body=b"x" * 1024)[0] == 200
    assert request(node, "POST", "/kilo", body=b"x" * 1025)[0] == 413
    status, _, body = request(node, "POST", "/default", body=b"x" * 200_000)  # 128 MB by default
    assert status == 200 and len(echo(body)["body"]) == 200_000
    assert request(node, "GET", "/bytes")[0] == 200  # no body at all

    # The client announced the body and waits: Kong says 417 rather than 413.
    with RawClient(node.proxy_port) as client:
        client.send(b"POST /bytes HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
        response = client.response()
        assert (response.status, json.loads(response.body)["message"]) == (417, EXCEEDED)
    # Only what was allowed reached the upstream (routes strip their path: tell them by size).
    assert [len(r.body) for r in echo_upstream.requests if r.method == "POST"] == [10, 1024, 200_000]


def test_chunked_bodies_are_counted_as_they_arrive(node: Any, echo_upstream: EchoUpstream) -> None:
    with RawClient(node.proxy_port) as client:
        chunked(client, "/bytes", [b"abcd", b"efgh"]).send(b"0\r\n\r\n")
        response = client.response()
        assert response.status == 200 and echo(response.body)["body"] == "abcdefgh"
    with RawClient(node.proxy_port) as client:
        response = chunked(client, "/bytes", [b"abcd", b"efgh", b"ijk"]).response()  # 11 bytes
        assert (response.status, json.loads(response.body)["message"]) == (413, EXCEEDED)
        assert client.at_eof()
    with RawClient(node.proxy_port) as client:
        response = chunked(client, "/bytes", [b"x" * 6, b"y" * 6], expect=True).response()
        assert (response.status, json.loads(response.body)["message"]) == (417, EXCEEDED)

    # Past the proxy's request buffer (1 MiB) the body streams upstream: still counted.
    piece = b"z" * 65536
    with RawClient(node.proxy_port) as client:
        chunked(client, "/mega", [piece] * 24).send(b"0\r\n\r\n")  # 1.5 MiB of 2 allowed
        response = client.response()
        assert response.status == 200 and len(echo(response.body)["body"]) == 24 * 65536
    with RawClient(node.proxy_port) as client:
        response = chunked(client, "/mega", [piece] * 33).response()  # one chunk past 2 MiB
        assert response.status == 413
    # A route that streams requests (request_buffering off) is cut off too.
    with RawClient(node.proxy_port) as client:
        response = chunked(client, "/streamed", [b"s" * 600, b"s" * 600]).response()
        assert (response.status, json.loads(response.body)["message"]) == (413, EXCEEDED)
    # Bodies cut off while streaming never completed upstream.
    assert [len(r.body) for r in echo_upstream.requests if r.method == "POST"] == [8, 24 * 65536]


def test_require_content_length(node: Any) -> None:
    status, _, body = request(node, "GET", "/required")
    assert (status, json.loads(body)["message"]) == (411, "A valid Content-Length header is required")
    assert request(node, "POST", "/required", body=b"12345")[0] == 200
    assert request(node, "POST", "/required", body=b"x" * 11)[0] == 413
    with RawClient(node.proxy_port) as client:  # chunked is accepted, and counted
        chunked(client, "/required", [b"12345"]).send(b"0\r\n\r\n")
        assert client.response().status == 200
    with RawClient(node.proxy_port) as client:
        client.send(
            b"POST /required HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
        )
        assert client.response().status == 411  # Kong compares the header with "chunked" exactly


def config_errors(config: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.load(
            {"_format_version": "3.0", "plugins": [{"name": "request-size-limiting", "config": config}]}
        )
    return dict(info.value.fields["plugins"][0])


def test_schema_defaults_and_refusals() -> None:
    loaded = declarative.load({"_format_version": "3.0", "plugins": [{"name": "request-size-limiting"}]})
    assert loaded.of("plugins")[0]["config"] == {
        "allowed_payload_size": 128,
        "size_unit": "megabytes",
        "require_content_length": False,
    }
    assert config_errors({"allowed_payload_size": 1.5, "size_unit": "gigabytes"}) == {
        "config": {
            "allowed_payload_size": "expected an integer",
            "size_unit": "expected one of: megabytes, kilobytes, bytes",
        }
    }
    assert config_errors({"size_unit": None, "require_content_length": "no"}) == {
        "config": {"size_unit": "required field missing", "require_content_length": "expected a boolean"}
    }
