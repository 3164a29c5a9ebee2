"""``PluginContext``'s headers: response headers set before the response phase (waiting, then merged
by ``attach_response``) and after it (the attached list, edited in place), the request headers'
``replace_headers``/``replace_encoded_headers``, and Kong's consumer headers
(``set_consumer_headers``) with and without the per-instance cache."""

from __future__ import annotations

from typing import Any

import pytest

from zonegate.plugins.api import PluginContext, encode_header
from zonegate.plugins.consumer_headers import EncodedHeaders, set_consumer_headers

Headers = list[tuple[bytes, bytes]]
FRAMING = ("Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "TE", "Trailer", "Upgrade")


class FakeRequest:
    """The parts of a request ``PluginContext`` reads for headers."""

    def __init__(self, headers: Headers | None = None) -> None:
        self.headers: Headers = list(headers or [])
        self.method = "GET"
        self.path = "/"
        self.scheme = "http"
        self.client_ip = "192.0.2.1"
        self.request_id = "test-request"
        self.query_bytes = b""
        self.upstream_host: str | None = None

    def set_upstream_host(self, host: str) -> None:
        self.upstream_host = host


def context(request_headers: Headers | None = None) -> PluginContext:
    return PluginContext(FakeRequest(request_headers), {}, None)  # type: ignore[arg-type]


def request_headers(ctx: PluginContext) -> Headers:
    headers: Headers = ctx.request.headers
    return headers


def upstream_response() -> Headers:
    return [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"42"),
        (b"x-limit", b"upstream-1"),
        (b"Server", b"upstream"),
        (b"X-LIMIT", b"upstream-2"),
        (b"Vary", b"Accept"),
    ]


# -- encoding ----------------------------------------------------------------------------------------


def test_encode_header_escapes_line_breaks_and_falls_back_to_utf8() -> None:
    assert encode_header("a\r\nSet-Cookie: x") == b"a%0D%0ASet-Cookie: x"
    assert encode_header("nul\0") == b"nul%00"
    assert encode_header("caf\u00e9") == b"caf\xe9"  # latin-1 when it can
    assert encode_header("\u20ac5 caf\u00e9") == "\u20ac5 caf\u00e9".encode()  # else UTF-8, all of it


# -- before the response phase: waiting headers ------------------------------------------------------


def test_waiting_headers_are_encoded_and_readable_before_attach() -> None:
    ctx = context()
    ctx.set_response_header("X-Limit", "5")
    ctx.add_response_header("X-Multi", "a")
    ctx.add_response_header("x-multi", "b")
    ctx.set_response_header("X-Injected", "v\r\nSet-Cookie: evil=1")
    ctx.set_response_header("X-Euro", "\u20ac")
    assert ctx.response_headers == [
        (b"X-Limit", b"5"),
        (b"X-Multi", b"a"),
        (b"x-multi", b"b"),
        (b"X-Injected", b"v%0D%0ASet-Cookie: evil=1"),
        (b"X-Euro", b"\xe2\x82\xac"),
    ]
    assert ctx.response_header_values("X-MULTI") == ["a", "b"]
    assert ctx.response_header("x-limit") == "5"
    assert ctx.response_header("X-Absent") is None
    assert ctx.response_header_values("X-Absent") == []
    assert ctx.response_header_items()[:3] == [("X-Limit", "5"), ("X-Multi", "a"), ("x-multi", "b")]
    # As sent: ``name: value\r\n`` per header.
    expected = sum(len(k) + len(v) + 4 for k, v in ctx.response_headers)
    assert ctx.response_head_bytes() == expected
    assert ctx.response_head_bytes() == len(b"X-Limit: 5\r\n") + len(b"X-Multi: a\r\n") * 2 + len(
        b"X-Injected: v%0D%0ASet-Cookie: evil=1\r\n"
    ) + len(b"X-Euro: \xe2\x82\xac\r\n")


def test_nothing_waiting_weighs_nothing() -> None:
    ctx = context()
    assert ctx.response_head_bytes() == 0
    assert ctx.response_header_items() == []
    response = upstream_response()
    ctx.attach_response(response)
    assert response == upstream_response()  # nothing to merge: untouched


def test_attach_replaces_the_responses_own_headers_of_each_waiting_name() -> None:
    ctx = context()
    ctx.set_response_header("X-Limit", "5")
    ctx.add_response_header("vary", "Origin")
    ctx.add_response_header("Vary", "Cookie")
    ctx.set_response_header("X-New", "1")
    response = upstream_response()
    ctx.attach_response(response)
    assert response == [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"42"),
        (b"Server", b"upstream"),
        (b"X-Limit", b"5"),
        (b"vary", b"Origin"),
        (b"Vary", b"Cookie"),
        (b"X-New", b"1"),
    ]
    assert ctx.response_headers == []  # nothing waits any more


def test_framing_headers_set_before_the_response_are_dropped() -> None:
    ctx = context()
    for name in FRAMING:
        ctx.set_response_header(name, "plugin")
    ctx.add_response_header("content-length", "1")
    ctx.set_response_headers([("TRANSFER-ENCODING", "chunked"), ("X-Kept", "yes")])
    ctx.set_encoded_response_headers([(b"Connection", b"close")], [b"connection"])
    response = upstream_response()
    ctx.attach_response(response)
    # The response's own Content-Length stays, no plugin's framing header is added.
    assert response == [*upstream_response(), (b"X-Kept", b"yes")]


def test_a_later_set_replaces_an_earlier_one_whatever_the_call() -> None:
    ctx = context()
    ctx.set_response_header("X-A", "first")
    ctx.set_response_header("x-a", "second")
    ctx.add_response_header("X-B", "1")
    ctx.add_response_header("X-B", "2")
    ctx.set_response_header("X-b", "only")  # replaces both added values
    # set_response_header, then the encoded form of the same name.
    ctx.set_response_header("X-RateLimit-Limit", "text")
    ctx.set_encoded_response_headers([(b"X-RateLimit-Limit", b"7")], [b"x-ratelimit-limit"])
    # The encoded form, then set_response_header.
    ctx.set_encoded_response_headers([(b"RateLimit-Remaining", b"3")], [b"ratelimit-remaining"])
    ctx.set_response_header("ratelimit-remaining", "2")
    # set_response_headers too, and add after set keeps both.
    ctx.set_response_headers([("X-C", "1"), ("x-c", "2"), ("X-D", "d")])
    ctx.add_response_header("X-D", "d2")
    assert ctx.response_headers == [
        (b"x-a", b"second"),
        (b"X-b", b"only"),
        (b"X-RateLimit-Limit", b"7"),
        (b"ratelimit-remaining", b"2"),
        (b"x-c", b"2"),
        (b"X-D", b"d"),
        (b"X-D", b"d2"),
    ]
    response: Headers = [(b"X-A", b"up"), (b"X-RATELIMIT-LIMIT", b"up"), (b"Other", b"o")]
    ctx.attach_response(response)
    assert response == [
        (b"Other", b"o"),
        (b"x-a", b"second"),
        (b"X-b", b"only"),
        (b"X-RateLimit-Limit", b"7"),
        (b"ratelimit-remaining", b"2"),
        (b"x-c", b"2"),
        (b"X-D", b"d"),
        (b"X-D", b"d2"),
    ]


def test_clear_removes_a_waiting_header() -> None:
    ctx = context()
    ctx.set_response_header("X-Gone", "1")
    ctx.add_response_header("x-gone", "2")
    ctx.set_response_header("X-Stays", "1")
    ctx.clear_response_header("X-GONE")
    assert ctx.response_headers == [(b"X-Stays", b"1")]
    assert ctx.response_header("X-Gone") is None
    response: Headers = [(b"X-Gone", b"upstream"), (b"Server", b"upstream")]
    ctx.attach_response(response)
    # The cleared name no longer waits, so the response's own header of that name is not replaced.
    assert response == [(b"X-Gone", b"upstream"), (b"Server", b"upstream"), (b"X-Stays", b"1")]


def test_set_after_clear_waits_again() -> None:
    ctx = context()
    ctx.set_response_header("X-A", "1")
    ctx.clear_response_header("X-A")
    ctx.set_response_header("X-A", "2")
    response: Headers = [(b"x-a", b"up")]
    ctx.attach_response(response)
    assert response == [(b"X-A", b"2")]


# -- after attach: the response's own list -----------------------------------------------------------


def attached(ctx: PluginContext | None = None) -> tuple[PluginContext, Headers]:
    ctx = ctx or context()
    response = upstream_response()
    ctx.attach_response(response)
    return ctx, response


def test_after_attach_calls_edit_the_attached_list_in_place() -> None:
    ctx, response = attached()
    ctx.set_response_header("X-Limit", "9")  # replaces both upstream values, any case
    ctx.add_response_header("Vary", "Origin")  # another value
    ctx.clear_response_header("SERVER")
    ctx.set_response_header("X-Bad", "a\nb")
    ctx.set_response_header("X-Euro", "\u20ac")
    assert response == [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"42"),
        (b"Vary", b"Accept"),
        (b"X-Limit", b"9"),
        (b"Vary", b"Origin"),
        (b"X-Bad", b"a%0Ab"),
        (b"X-Euro", b"\xe2\x82\xac"),
    ]
    assert ctx.response_headers == []  # nothing waits after attach


def test_after_attach_set_response_headers_and_encoded_ones_replace() -> None:
    ctx, response = attached()
    ctx.set_response_headers([("x-limit", "a"), ("X-New", "n")])
    ctx.set_encoded_response_headers(
        [(b"Vary", b"Cookie"), (b"X-Utf8", "\u20ac".encode())], [b"vary", b"x-utf8"]
    )
    assert response == [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"42"),
        (b"Server", b"upstream"),
        (b"x-limit", b"a"),
        (b"X-New", b"n"),
        (b"Vary", b"Cookie"),
        (b"X-Utf8", b"\xe2\x82\xac"),  # the same bytes, not encoded twice
    ]


def test_after_attach_framing_headers_are_left_to_the_proxy() -> None:
    ctx, response = attached()
    for name in FRAMING:
        ctx.set_response_header(name, "plugin")
        ctx.add_response_header(name, "plugin")
    ctx.set_response_headers([("content-length", "1")])
    ctx.set_encoded_response_headers([(b"Transfer-Encoding", b"chunked")], [b"transfer-encoding"])
    ctx.clear_response_header("Content-Length")
    assert response == upstream_response()


def test_reads_after_attach_see_the_attached_list() -> None:
    ctx = context()
    ctx.set_response_header("X-Limit", "5")
    response = upstream_response()
    ctx.attach_response(response)
    assert ctx.response_header_values("x-LIMIT") == ["5"]
    assert ctx.response_header("content-type") == "application/json"
    assert ctx.response_header_items() == [(k.decode(), v.decode()) for k, v in response]
    assert ctx.response_head_bytes() == sum(len(k) + len(v) + 4 for k, v in response)
    before = ctx.response_head_bytes()
    response.append((b"X-Proxy", b"1"))  # the proxy's own edits are seen as well
    assert ctx.response_head_bytes() == before + len(b"X-Proxy: 1\r\n")
    assert ctx.response_header("x-proxy") == "1"


def test_an_attached_list_with_nothing_waiting_is_still_edited() -> None:
    ctx, response = attached()
    ctx.set_response_header("X-Late", "1")
    assert response[-1] == (b"X-Late", b"1")
    assert ctx.response_headers == []


# -- request headers ---------------------------------------------------------------------------------


def test_replace_encoded_headers_removes_every_case_and_appends() -> None:
    ctx = context(
        [
            (b"Host", b"example.test"),
            (b"X-Consumer-ID", b"forged"),
            (b"Accept", b"*/*"),
            (b"x-consumer-id", b"forged-again"),
            (b"X-CONSUMER-USERNAME", b"forged"),
            (b"User-Agent", b"ua"),
        ]
    )
    ctx.replace_encoded_headers(
        frozenset({b"x-consumer-id", b"x-consumer-username"}),
        [(b"X-Consumer-ID", b"real"), (b"X-Extra", b"e")],
    )
    assert request_headers(ctx) == [
        (b"Host", b"example.test"),
        (b"Accept", b"*/*"),
        (b"User-Agent", b"ua"),
        (b"X-Consumer-ID", b"real"),
        (b"X-Extra", b"e"),
    ]


def test_replace_encoded_headers_without_a_match_only_appends() -> None:
    original: Headers = [(b"Host", b"h"), (b"Accept", b"*/*")]
    ctx = context(original)
    held = request_headers(ctx)
    ctx.replace_encoded_headers(frozenset({b"x-absent"}), [(b"X-Absent", b"1")])
    assert request_headers(ctx) is held  # the same list, edited in place
    assert held == [*original, (b"X-Absent", b"1")]


def test_replace_headers_encodes_and_matches_any_case() -> None:
    ctx = context([(b"x-a", b"1"), (b"Keep", b"k"), (b"X-B", b"2"), (b"X-A", b"3")])
    held = request_headers(ctx)
    ctx.replace_headers(["X-a", "x-B", "X-Unset"], [("X-A", "new\r\n"), ("X-C", "\u20ac")])
    assert request_headers(ctx) is held
    assert held == [(b"Keep", b"k"), (b"X-A", b"new%0D%0A"), (b"X-C", b"\xe2\x82\xac")]
    assert ctx.header("x-a") == "new%0D%0A"
    assert ctx.header("x-b") is None


# -- Kong's consumer headers ---------------------------------------------------------------------------

CLIENT_FORGED: Headers = [
    (b"Host", b"example.test"),
    (b"x-consumer-id", b"forged"),
    (b"X-Consumer-Custom-ID", b"forged"),
    (b"Accept", b"*/*"),
    (b"X-Consumer-Username", b"forged"),
    (b"x-credential-identifier", b"forged"),
    (b"X-Anonymous-Consumer", b"forged"),
]
CAROL = {"id": "c-1", "username": "carol", "custom_id": "cust-1"}
CAROL_KEY = {"id": "k-1", "key": "secret", "username": "carol-basic"}


def test_consumer_headers_replace_the_clients_own() -> None:
    ctx = context(CLIENT_FORGED)
    set_consumer_headers(ctx, CAROL, CAROL_KEY)
    assert request_headers(ctx) == [
        (b"Host", b"example.test"),
        (b"Accept", b"*/*"),
        (b"X-Consumer-ID", b"c-1"),
        (b"X-Consumer-Custom-ID", b"cust-1"),
        (b"X-Consumer-Username", b"carol"),
        (b"X-Credential-Identifier", b"k-1"),
    ]
    assert ctx.consumer is CAROL
    assert ctx.credential is CAROL_KEY


def test_credential_identifier_field_and_missing_consumer_fields() -> None:
    ctx = context(CLIENT_FORGED)
    set_consumer_headers(ctx, {"id": "c-2", "username": "dave"}, CAROL_KEY, identifier="username")
    # No custom_id: no X-Consumer-Custom-ID, and the client's is gone too.
    assert request_headers(ctx) == [
        (b"Host", b"example.test"),
        (b"Accept", b"*/*"),
        (b"X-Consumer-ID", b"c-2"),
        (b"X-Consumer-Username", b"dave"),
        (b"X-Credential-Identifier", b"carol-basic"),
    ]


def test_no_credential_means_anonymous() -> None:
    ctx = context(CLIENT_FORGED)
    anonymous = {"id": "anon-1", "username": "anonymous"}
    set_consumer_headers(ctx, anonymous, None)
    assert request_headers(ctx) == [
        (b"Host", b"example.test"),
        (b"Accept", b"*/*"),
        (b"X-Consumer-ID", b"anon-1"),
        (b"X-Consumer-Username", b"anonymous"),
        (b"X-Anonymous-Consumer", b"true"),
    ]
    assert ctx.consumer is anonymous and ctx.credential is None


def test_a_credential_without_a_consumer_sends_only_its_identifier() -> None:
    ctx = context(CLIENT_FORGED)
    set_consumer_headers(ctx, None, CAROL_KEY)
    assert request_headers(ctx) == [
        (b"Host", b"example.test"),
        (b"Accept", b"*/*"),
        (b"X-Credential-Identifier", b"k-1"),
    ]


def run_consumer_headers(
    consumer: dict[str, Any] | None, credential: dict[str, Any] | None, kept: dict[Any, EncodedHeaders]
) -> Headers:
    ctx = context(CLIENT_FORGED)
    set_consumer_headers(ctx, consumer, credential, kept=kept)
    return request_headers(ctx)


def test_kept_headers_are_reused_per_consumer_and_credential() -> None:
    kept: dict[Any, EncodedHeaders] = {}
    first = run_consumer_headers(CAROL, CAROL_KEY, kept)
    assert first == [
        (b"Host", b"example.test"),
        (b"Accept", b"*/*"),
        (b"X-Consumer-ID", b"c-1"),
        (b"X-Consumer-Custom-ID", b"cust-1"),
        (b"X-Consumer-Username", b"carol"),
        (b"X-Credential-Identifier", b"k-1"),
    ]
    assert kept == {("c-1", "k-1"): first[2:]}
    entry = kept[("c-1", "k-1")]

    second = run_consumer_headers(CAROL, CAROL_KEY, kept)
    assert second == first  # the client's forged headers are removed on the cached path too
    assert kept[("c-1", "k-1")] is entry  # reused, not rebuilt
    assert len(kept) == 1
    assert second[2] is entry[0]  # the very encoded headers kept

    # Another consumer, another credential of the same consumer, no credential: their own entries.
    dave = {"id": "c-2", "username": "dave"}
    dave_key = {"id": "k-2"}
    assert run_consumer_headers(dave, dave_key, kept)[2:] == [
        (b"X-Consumer-ID", b"c-2"),
        (b"X-Consumer-Username", b"dave"),
        (b"X-Credential-Identifier", b"k-2"),
    ]
    other_key = {"id": "k-3"}
    assert run_consumer_headers(CAROL, other_key, kept)[-1] == (b"X-Credential-Identifier", b"k-3")
    assert run_consumer_headers(CAROL, None, kept)[-1] == (b"X-Anonymous-Consumer", b"true")
    assert set(kept) == {("c-1", "k-1"), ("c-2", "k-2"), ("c-1", "k-3"), ("c-1", None)}
    # Carol's first entry is unchanged by the others.
    assert run_consumer_headers(CAROL, CAROL_KEY, kept) == first


@pytest.mark.parametrize("kept", [None, {}])
def test_consumer_headers_without_client_headers_only_append(kept: dict[Any, EncodedHeaders] | None) -> None:
    ctx = context([(b"Host", b"h")])
    held = request_headers(ctx)
    set_consumer_headers(ctx, CAROL, CAROL_KEY, kept=kept)
    set_consumer_headers(ctx, CAROL, CAROL_KEY, kept=kept)  # again: replaced, not doubled
    assert request_headers(ctx) is held
    assert held == [
        (b"Host", b"h"),
        (b"X-Consumer-ID", b"c-1"),
        (b"X-Consumer-Custom-ID", b"cust-1"),
        (b"X-Consumer-Username", b"carol"),
        (b"X-Credential-Identifier", b"k-1"),
    ]
