"""proxy-cache: the pure rules (cache key, Cache-Control, media types, the memory store), Kong's
schema, and the plugin through a real node and a real upstream whose request count proves when
the cache answered."""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from email.utils import formatdate
from typing import Any

import pytest

from data_plane.test_proxy_e2e import service
from harness.echo_upstream import EchoUpstream, filler
from harness.zonegate_node import ZonegateNode
from zonegate.core import declarative
from zonegate.core.errors import DeclarativeConfigError
from zonegate.plugins.proxy_cache import cache_key
from zonegate.plugins.proxy_cache.cache_control import (
    ContentTypes,
    delta_seconds,
    parse_directives,
    parse_media_type,
    resource_ttl,
    shareable,
)
from zonegate.plugins.proxy_cache.handler import refused
from zonegate.plugins.proxy_cache.memory_store import ENTRY_OVERHEAD, CachedResponse, MemoryStore

Headers = list[tuple[str, str]]

# -- Cache-Control and media types ---------------------------------------------------------------


def test_directives_are_read_as_kong_reads_them() -> None:
    assert parse_directives([]) == {}
    assert parse_directives(["No-Cache, MAX-AGE=5", " s-maxage = 10 ,public"]) == {
        "no-cache": None,
        "max-age": "5",
        "s-maxage": "10",
        "public": None,
    }
    # A quoted argument keeps its commas and loses its quotes; the last of a repeat wins.
    assert parse_directives(['private="Set-Cookie, X-Id", max-age=1', "max-age=7"]) == {
        "private": "Set-Cookie, X-Id",
        "max-age": "7",
    }
    assert parse_directives([",,  ,no-store,"]) == {"no-store": None}
    directives = parse_directives(['max-age="30", min-fresh=abc, max-stale'])
    assert delta_seconds(directives, "max-age") == 30
    assert delta_seconds(directives, "min-fresh") is None  # not a number: as if absent
    assert delta_seconds(directives, "max-stale") is None and delta_seconds(directives, "nope") is None
    assert shareable(parse_directives(["public"])) and shareable(parse_directives(["s-maxage=1"]))
    assert not shareable(parse_directives(["max-age=60"]))


def test_resource_ttl() -> None:
    now = 1_700_000_000.0
    later = formatdate(now + 90, usegmt=True)
    assert resource_ttl(parse_directives(["s-maxage=20, max-age=5"]), [later], now) == 20
    assert resource_ttl(parse_directives(["max-age=5"]), [later], now) == 5
    assert resource_ttl({}, ["garbage", later], now) == 90  # the last Expires wins
    assert resource_ttl({}, [formatdate(now - 5, usegmt=True)], now) == 0
    assert resource_ttl({}, ["0"], now) == 0  # an invalid date is already expired (RFC 9111 5.3)
    assert resource_ttl(parse_directives(["max-age=soon"]), [later], now) == 0
    assert resource_ttl(parse_directives(["public"]), [], now) == 0


def test_media_types_match_as_in_kong_3() -> None:
    assert parse_media_type("Application/JSON; Charset=utf-8") == (
        "application",
        "json",
        frozenset({("charset", "utf-8")}),
    )
    assert parse_media_type('text/plain; a="x;y" ; b=2;') == (
        "text",
        "plain",
        frozenset({("a", "x;y"), ("b", "2")}),
    )
    assert parse_media_type("*") == ("*", "*", frozenset())
    for bad in ("", "json", "text/plain; charset", "a/b/c", "text/plain junk"):
        assert parse_media_type(bad) is None, bad

    types = ContentTypes(["text/plain", "application/json; charset=utf-8", "image/*", "not a type"])
    assert types.match("text/plain") and types.match("TEXT/Plain")
    assert not types.match("text/plain; charset=utf-8")  # parameters must match too
    assert types.match("application/json;charset=utf-8") and not types.match("application/json")
    assert types.match("image/png") and not types.match("image/png; q=1")
    assert not types.match("text/html") and not types.match("")
    everything = ContentTypes(["*/*"])
    assert everything.match("video/mp4") and not everything.match("video/mp4; codecs=x")


# -- the cache key --------------------------------------------------------------------------------


def test_cache_key_components() -> None:
    assert cache_key.prefix("c", "r") == "c:r" and cache_key.prefix(None, "r") == "r"
    assert cache_key.prefix("c", None) == "default"
    args = cache_key.query_args("b=2&a=1&flag&a=0&sp=x+y%21&=&")
    assert args == {"b": ["2"], "a": ["1", "0"], "flag": [None], "sp": ["x y!"], "": [""]}
    # Every parameter, sorted by name, when none are configured; repeats sorted; bare names bare.
    assert cache_key.params_part(args, ()) == "=:a=0,1:b=2:flag:sp=x y!"
    # The configured ones in their order; missing ones skipped.
    assert cache_key.params_part(args, ("sp", "b", "missing")) == "sp=x y!:b=2"
    headers = {"accept": ["b", "a"], "x-tenant": ["t1"]}
    lookup = lambda name: headers.get(name.lower(), [])  # noqa: E731
    assert cache_key.vary_part(("X-Tenant", "Accept", "X-None"), lookup) == "X-Tenant=t1:Accept=a,b"
    expected = hashlib.sha256(b"c:r|GET|/p|a=1|X-Tenant=t1").hexdigest()
    assert cache_key.build("c", "r", "GET", "/p", "a=1", "X-Tenant=t1") == expected


# -- the memory store ------------------------------------------------------------------------------


def entry(body: bytes = b"x", *, at: float = 0.0, ttl: float = 10.0) -> CachedResponse:
    return CachedResponse(200, (("Content-Type", "text/plain"),), body, at, ttl)


def test_memory_store_ttl_and_lru() -> None:
    store = MemoryStore(max_entries=2)
    assert store.put("a", entry(), 5, now=100) and store.put("b", entry(), None, now=100)
    assert store.get("a", 104.9) is not None  # and "a" becomes the most recently used
    assert store.put("c", entry(), 5, now=105)  # full: "b", the least recently used, goes
    assert store.get("b", 105) is None and len(store) == 2
    assert store.get("a", 105) is None  # expired at 105
    assert len(store) == 1 and store.get("c", 109) is not None
    assert store.delete("c") and not store.delete("c") and store.bytes_used == 0


def test_memory_store_bounds_bytes() -> None:
    one = entry(b"y" * 1000)
    size = one.size + 1 + ENTRY_OVERHEAD
    store = MemoryStore(max_bytes=2 * size)
    assert store.put("a", one, None, 0) and store.put("b", one, None, 0)
    assert store.bytes_used == 2 * size
    assert store.put("a", one, None, 0) and store.bytes_used == 2 * size  # replaced, not counted twice
    assert store.put("c", one, None, 0)  # evicts "b": "a" was used last
    assert store.get("b", 0) is None and store.get("a", 0) is not None
    assert not store.put("big", entry(b"z" * (2 * size)), None, 0)  # never fits: refused
    assert len(store) == 2
    store.clear()
    assert len(store) == 0 and store.bytes_used == 0


def test_what_a_request_refuses_with_cache_control() -> None:
    cached = entry(at=100.0, ttl=10.0)
    assert not refused(cached, {}, 105)
    assert refused(cached, parse_directives(["no-cache"]), 101)
    assert refused(cached, parse_directives(["max-age=4"]), 105)
    assert not refused(cached, parse_directives(["max-age=5"]), 105)
    assert refused(cached, parse_directives(["min-fresh=6"]), 105)
    assert refused(cached, {}, 111)  # stale
    assert not refused(cached, parse_directives(["max-stale=2"]), 111)
    assert refused(cached, parse_directives(["max-stale=2"]), 113)
    assert not refused(cached, parse_directives(["max-stale"]), 500)  # any staleness


# -- schema ----------------------------------------------------------------------------------------


def config_errors(config: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.load({"_format_version": "3.0", "plugins": [{"name": "proxy-cache", "config": config}]})
    return dict(info.value.fields["plugins"][0])


def test_schema_defaults_and_errors() -> None:
    loaded = declarative.load(
        {"_format_version": "3.0", "plugins": [{"name": "proxy-cache", "config": {"strategy": "memory"}}]}
    )
    assert loaded.of("plugins")[0]["config"] == {
        "response_code": [200, 301, 404],
        "request_method": ["GET", "HEAD"],
        "content_type": ["text/plain", "application/json"],
        "cache_ttl": 300,
        "strategy": "memory",
        "cache_control": False,
        "ignore_uri_case": False,
        "storage_ttl": None,
        "memory": {"dictionary_name": "kong_db_cache"},
        "vary_query_params": None,
        "vary_headers": None,
        "response_headers": {"age": True, "X-Cache-Status": True, "X-Cache-Key": True},
    }
    assert config_errors({}) == {"config": {"strategy": "required field missing"}}
    assert config_errors({"strategy": "redis"}) == {"config": {"strategy": "expected one of: memory"}}
    assert config_errors({"strategy": "memory", "response_code": []}) == {
        "config": {"response_code": "length must be at least 1"}
    }
    assert config_errors({"strategy": "memory", "response_code": [200, 99, "x"]}) == {
        "config": {"response_code": [None, "value should be between 100 and 900", "expected an integer"]}
    }
    assert config_errors({"strategy": "memory", "request_method": ["GET", "DELETE"]}) == {
        "config": {"request_method": [None, "expected one of: HEAD, GET, POST, PATCH, PUT"]}
    }
    assert config_errors({"strategy": "memory", "cache_ttl": 0}) == {
        "config": {"cache_ttl": "value must be greater than 0"}
    }
    assert config_errors({"strategy": "memory", "cache_ttl": 1.5}) == {
        "config": {"cache_ttl": "expected an integer"}
    }
    assert config_errors({"strategy": "memory", "response_headers": {"age": "yes", "Via": True}}) == {
        "config": {"response_headers": {"age": "expected a boolean", "Via": "unknown field"}}
    }
    assert config_errors({"strategy": "memory", "vary_headers": "Accept"}) == {
        "config": {"vary_headers": "expected an array"}
    }
    assert config_errors({"strategy": "memory", "ttl": 5}) == {"config": {"ttl": "unknown field"}}


# -- through a real node -------------------------------------------------------------------------

ROUTE_IDS = {
    name: f"00000000-0000-4000-8000-{index:012d}"
    for index, name in enumerate(
        ["cache", "bin", "short", "stale", "vary", "case", "quiet", "cc", "auth", "exit"], start=1
    )
}
ALICE = "00000000-0000-4000-9000-000000000001"
BOB = "00000000-0000-4000-9000-000000000002"


def fetch(
    node: ZonegateNode,
    path: str,
    headers: Headers | None = None,
    *,
    method: str = "GET",
    connection: http.client.HTTPConnection | None = None,
) -> tuple[int, Headers, bytes]:
    """One request; the response's headers in order with repeats (names lower-cased)."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=15)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers or []:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        found = [(k.lower(), v) for k, v in response.getheaders()]
        length = dict(found).get("content-length")
        assert method == "HEAD" or length is None or int(length) == len(body)
        return response.status, found, body
    finally:
        if connection is None:
            conn.close()


def header(headers: Headers, name: str) -> str | None:
    return next((v for k, v in headers if k == name), None)


def status_of(headers: Headers) -> str | None:
    return header(headers, "x-cache-status")


def hits(upstream: EchoUpstream, path: str) -> int:
    """How many requests for ``path`` reached the upstream (the routes do not strip the path)."""
    return sum(1 for r in upstream.requests if r.path == path)


def steer(*response_headers: str) -> Headers:
    return [("X-Echo-Response-Header", value) for value in response_headers]


def expected_key(route: str, path: str, *, method: str = "GET", params: str = "", consumer: str = "") -> str:
    prefix = f"{consumer}:{ROUTE_IDS[route]}" if consumer else ROUTE_IDS[route]
    return hashlib.sha256(f"{prefix}|{method}|{path}|{params}|".encode()).hexdigest()


def cached_route(name: str, config: dict[str, Any] | None = None, **route: Any) -> dict[str, Any]:
    return {
        "name": name,
        "id": ROUTE_IDS[name],
        "paths": [f"/{name}"],
        "strip_path": False,
        "plugins": [{"name": "proxy-cache", "config": {"strategy": "memory", **(config or {})}}],
        **route,
    }


@pytest.fixture
def node(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> ZonegateNode:
    node: ZonegateNode = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    **service("svc", echo_upstream),
                    "routes": [
                        cached_route("cache"),
                        cached_route("bin", {"content_type": ["application/octet-stream"]}),
                        cached_route("short", {"cache_ttl": 1}),
                        cached_route("stale", {"cache_ttl": 1, "storage_ttl": 60}),
                        cached_route("vary", {"vary_headers": ["X-Tenant"], "vary_query_params": ["page"]}),
                        cached_route("case", {"ignore_uri_case": True}),
                        cached_route(
                            "quiet",
                            {
                                "response_headers": {
                                    "age": False,
                                    "X-Cache-Status": False,
                                    "X-Cache-Key": False,
                                }
                            },
                        ),
                        cached_route("cc", {"cache_control": True}),
                        cached_route(
                            "auth",
                            plugins=[
                                {"name": "key-auth", "config": {}},
                                {"name": "rate-limiting", "config": {"year": 1000, "limit_by": "consumer"}},
                                {"name": "proxy-cache", "config": {"strategy": "memory"}},
                            ],
                        ),
                        cached_route(
                            "exit",
                            plugins=[
                                {"name": "proxy-cache", "config": {"strategy": "memory"}},
                                {
                                    "name": "request-termination",
                                    "config": {
                                        "status_code": 200,
                                        "body": "ended",
                                        "content_type": "text/plain",
                                    },
                                },
                            ],
                        ),
                    ],
                },
            ],
            "consumers": [
                {"username": "alice", "id": ALICE, "keyauth_credentials": [{"key": "alice-key"}]},
                {"username": "bob", "id": BOB, "keyauth_credentials": [{"key": "bob-key"}]},
            ],
        }
    )
    return node


def test_miss_then_hit_without_the_upstream(node: ZonegateNode, echo_upstream: EchoUpstream) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=15)
    try:
        status, first, body = fetch(node, "/cache/a", connection=connection)
        assert status == 200 and status_of(first) == "Miss"
        key = header(first, "x-cache-key")
        assert key == expected_key("cache", "/cache/a")
        assert header(first, "age") is None  # only a hit has an age
        sock = connection.sock
        status, second, cached = fetch(node, "/cache/a", connection=connection)
        # A hit keeps the connection for the next request, as any answer to a whole request.
        assert header(second, "connection") == "keep-alive" and connection.sock is sock is not None
        assert status_of(fetch(node, "/cache/a", connection=connection)[1]) == "Hit"
    finally:
        connection.close()
    assert status == 200 and status_of(second) == "Hit" and header(second, "x-cache-key") == key
    assert cached == body and json.loads(body)["path"] == "/cache/a"
    assert hits(echo_upstream, "/cache/a") == 1  # the second request never reached the upstream
    assert header(second, "age") in ("0", "1")
    assert header(second, "content-type") == "application/json"
    assert header(second, "x-echo-upstream") == "echo"  # the upstream's own headers are replayed
    assert header(second, "date") == header(first, "date")
    assert [k for k, _ in second].count("server") == 1 and [k for k, _ in second].count("content-length") == 1

    # The query is part of the key, whatever the order of its parameters.
    assert status_of(fetch(node, "/cache/a?y=2&x=1")[1]) == "Miss"
    _, headers, _ = fetch(node, "/cache/a?x=1&y=2")
    assert status_of(headers) == "Hit"
    assert header(headers, "x-cache-key") == expected_key("cache", "/cache/a", params="x=1:y=2")
    # The method too: HEAD has its own entry, and a hit on it has no body.
    status, headers, body = fetch(node, "/cache/a", method="HEAD")
    assert (status, status_of(headers), body) == (200, "Miss", b"")
    status, headers, body = fetch(node, "/cache/a", method="HEAD")
    assert (status, status_of(headers), body) == (200, "Hit", b"")
    assert header(headers, "x-cache-key") == expected_key("cache", "/cache/a", method="HEAD")
    assert hits(echo_upstream, "/cache/a") == 3


def test_bypass(node: ZonegateNode, echo_upstream: EchoUpstream) -> None:
    # A method that is not cacheable: no key, no lookup.
    for _ in range(2):
        status, headers, _ = fetch(node, "/cache/post", method="POST")
        assert status == 200 and status_of(headers) == "Bypass" and header(headers, "x-cache-key") is None
    # A status that is not cacheable, and a content type that is not.
    for _ in range(2):
        status, headers, _ = fetch(node, "/cache/error", [("X-Echo-Status", "500")])
        assert status == 500 and status_of(headers) == "Bypass" and header(headers, "x-cache-key")
        status, headers, _ = fetch(node, "/cache/binary", [("X-Echo-Body-Size", "100")])
        assert header(headers, "content-type") == "application/octet-stream"
        assert status_of(headers) == "Bypass"
    assert hits(echo_upstream, "/cache/post") == hits(echo_upstream, "/cache/error") == 2
    assert hits(echo_upstream, "/cache/binary") == 2
    # 404 is cacheable by default; the steering header is not part of the key.
    assert status_of(fetch(node, "/cache/gone", [("X-Echo-Status", "404")])[1]) == "Miss"
    status, headers, _ = fetch(node, "/cache/gone")
    assert (status, status_of(headers)) == (404, "Hit")


def test_only_whole_buffered_bodies_are_stored(node: ZonegateNode, echo_upstream: EchoUpstream) -> None:
    small = [("X-Echo-Body-Size", "5000")]
    assert status_of(fetch(node, "/bin/small", small)[1]) == "Miss"
    status, headers, body = fetch(node, "/bin/small", small)
    assert status_of(headers) == "Hit" and body == filler(5000)
    # Larger than the proxy's buffer (1 MiB): streamed to the client untouched, never stored.
    large = [("X-Echo-Body-Size", str(3 << 19))]
    for _ in range(2):
        status, headers, body = fetch(node, "/bin/large", large)
        assert status == 200 and status_of(headers) == "Miss" and body == filler(3 << 19)
    # A chunked body within the buffer is held whole and stored.
    chunked = [("X-Echo-Body-Size", "3000"), ("X-Echo-Stream", "3")]
    assert status_of(fetch(node, "/bin/chunked", chunked)[1]) == "Miss"
    status, headers, body = fetch(node, "/bin/chunked", chunked)
    assert status_of(headers) == "Hit" and body == filler(3000)
    assert header(headers, "transfer-encoding") is None and header(headers, "content-length") == "3000"
    assert hits(echo_upstream, "/bin/large") == 2 and hits(echo_upstream, "/bin/small") == 1
    assert hits(echo_upstream, "/bin/chunked") == 1


def test_ttl(node: ZonegateNode, echo_upstream: EchoUpstream) -> None:
    for path in ("/short", "/stale"):
        assert status_of(fetch(node, path)[1]) == "Miss"
        assert status_of(fetch(node, path)[1]) == "Hit"
    time.sleep(1.2)
    # Past cache_ttl: gone from the store, or kept by storage_ttl and then refreshed.
    assert status_of(fetch(node, "/short")[1]) == "Miss"
    assert status_of(fetch(node, "/stale")[1]) == "Refresh"
    assert status_of(fetch(node, "/stale")[1]) == "Hit"  # what the refresh stored
    assert hits(echo_upstream, "/short") == hits(echo_upstream, "/stale") == 2


def test_vary_headers_and_query_params(node: ZonegateNode, echo_upstream: EchoUpstream) -> None:
    def tenant(name: str) -> Headers:
        return [("X-Tenant", name)]

    assert status_of(fetch(node, "/vary", tenant("a"))[1]) == "Miss"
    assert status_of(fetch(node, "/vary", tenant("b"))[1]) == "Miss"
    _, headers, body = fetch(node, "/vary", tenant("a"))
    assert status_of(headers) == "Hit" and json.loads(body)["headers_lower"]["x-tenant"] == "a"
    assert (
        header(headers, "x-cache-key")
        == hashlib.sha256(f"{ROUTE_IDS['vary']}|GET|/vary||X-Tenant=a".encode()).hexdigest()
    )
    assert status_of(fetch(node, "/vary")[1]) == "Miss"
    assert hits(echo_upstream, "/vary") == 3
    # Only the listed query parameters count.
    assert status_of(fetch(node, "/vary/q?page=1&junk=x")[1]) == "Miss"
    _, headers, body = fetch(node, "/vary/q?junk=y&page=1")
    assert status_of(headers) == "Hit" and json.loads(body)["query"] == "page=1&junk=x"
    assert status_of(fetch(node, "/vary/q?page=2&junk=x")[1]) == "Miss"
    # ignore_uri_case: paths that differ only in case share an entry.
    assert status_of(fetch(node, "/case/Some/Thing")[1]) == "Miss"
    _, headers, body = fetch(node, "/case/some/thing")
    assert status_of(headers) == "Hit" and json.loads(body)["path"] == "/case/Some/Thing"


def test_response_headers_switches_and_kong_debug(node: ZonegateNode, echo_upstream: EchoUpstream) -> None:
    for _ in range(2):  # a miss, then a hit that shows nothing either
        status, headers, _ = fetch(node, "/quiet")
        names = {k for k, _ in headers}
        assert status == 200 and not names & {"x-cache-status", "x-cache-key", "age"}
    assert hits(echo_upstream, "/quiet") == 1
    _, headers, _ = fetch(node, "/quiet", [("Kong-Debug", "1")])
    assert status_of(headers) == "Hit" and header(headers, "x-cache-key") and header(headers, "age")


def test_repeated_headers_are_replayed(node: ZonegateNode) -> None:
    cookies = steer("Set-Cookie: a=1", "Set-Cookie: b=2", "Link: <x>")
    _, first, _ = fetch(node, "/cache/cookies", cookies)
    _, second, _ = fetch(node, "/cache/cookies")
    assert status_of(second) == "Hit"
    assert (
        [v for k, v in second if k == "set-cookie"]
        == ["a=1", "b=2"]
        == [v for k, v in first if k == "set-cookie"]
    )
    assert header(second, "link") == "<x>"


def test_a_plugin_exit_after_the_cache_is_stored(node: ZonegateNode, echo_upstream: EchoUpstream) -> None:
    # request-termination (priority 2) runs after proxy-cache (100): its answer is a Miss and is
    # stored, as Kong's header and body filters run on an exit too.
    status, headers, body = fetch(node, "/exit")
    assert (status, status_of(headers), body) == (200, "Miss", b"ended")
    status, headers, body = fetch(node, "/exit")
    assert (status, status_of(headers), body) == (200, "Hit", b"ended")
    assert hits(echo_upstream, "/exit") == 0


def test_consumers_have_their_own_entries(node: ZonegateNode, echo_upstream: EchoUpstream) -> None:
    # Authentication runs first: no key, no cache.
    status, headers, _ = fetch(node, "/auth")
    assert status == 401 and status_of(headers) is None
    alice, bob = [("apikey", "alice-key")], [("apikey", "bob-key")]
    _, first, body = fetch(node, "/auth", alice)
    assert status_of(first) == "Miss"
    assert header(first, "x-cache-key") == expected_key("auth", "/auth", consumer=ALICE)
    _, second, cached = fetch(node, "/auth", alice)
    assert status_of(second) == "Hit" and cached == body
    # Rate-limiting ran before the cache: its counters on a hit are this request's, not replayed.
    assert header(first, "x-ratelimit-remaining-year") == "999"
    assert header(second, "x-ratelimit-remaining-year") == "998"
    assert header(second, "ratelimit-remaining") == "998"
    _, headers, _ = fetch(node, "/auth", bob)
    assert status_of(headers) == "Miss"
    assert header(headers, "x-cache-key") == expected_key("auth", "/auth", consumer=BOB)
    _, headers, body = fetch(node, "/auth", bob)
    assert status_of(headers) == "Hit" and json.loads(body)["headers_lower"]["apikey"] == "bob-key"
    assert hits(echo_upstream, "/auth") == 2


def test_cache_control(node: ZonegateNode, echo_upstream: EchoUpstream) -> None:
    # What the upstream says.
    for value in ("no-store", "private, max-age=60", "no-cache", "max-age=0", "public"):
        path = "/cc/" + value.replace(" ", "").replace(",", "-").replace("=", "")
        for _ in range(2):
            status, headers, _ = fetch(node, path, steer(f"Cache-Control: {value}"))
            assert status == 200 and status_of(headers) == "Bypass", value
        assert hits(echo_upstream, path) == 2
    assert status_of(fetch(node, "/cc/none")[1]) == "Bypass"  # nothing says how long: not stored
    for path, response in (
        ("/cc/max-age", steer("Cache-Control: max-age=60")),
        ("/cc/s-maxage", steer("Cache-Control: s-maxage=60, max-age=0")),
        ("/cc/expires", steer(f"Expires: {formatdate(time.time() + 60, usegmt=True)}")),
        ("/cc/short", steer("Cache-Control: max-age=1")),
    ):
        assert status_of(fetch(node, path, response)[1]) == "Miss", path
        assert status_of(fetch(node, path)[1]) == "Hit", path

    # What the client says (the upstream keeps answering max-age=60, so what it sends is stored).
    def client(value: str) -> Headers:
        return [("Cache-Control", value), *steer("Cache-Control: max-age=60")]

    assert status_of(fetch(node, "/cc/max-age", client("no-store"))[1]) == "Bypass"
    _, headers, body = fetch(node, "/cc/max-age", client("no-cache"))
    assert status_of(headers) == "Refresh"
    assert hits(echo_upstream, "/cc/max-age") == 3  # no-store and no-cache both went upstream
    _, headers, cached = fetch(node, "/cc/max-age")
    assert status_of(headers) == "Hit" and cached == body  # the refresh replaced the entry
    assert status_of(fetch(node, "/cc/max-age", client("min-fresh=120"))[1]) == "Refresh"
    assert status_of(fetch(node, "/cc/max-age", client("max-age=3600"))[1]) == "Hit"
    status, headers, _ = fetch(node, "/cc/never", [("Cache-Control", "only-if-cached")])
    assert status == 504 and hits(echo_upstream, "/cc/never") == 0

    time.sleep(1.2)
    # Kept as long as its max-age said: gone now.
    assert status_of(fetch(node, "/cc/short", client("max-stale"))[1]) == "Miss"
    # Older than the client accepts.
    assert status_of(fetch(node, "/cc/s-maxage", client("max-age=1"))[1]) == "Refresh"
    assert hits(echo_upstream, "/cc/short") == hits(echo_upstream, "/cc/s-maxage") == 2

    # A request with Authorization and no consumer: stored only if the response allows sharing.
    authorized = [("Authorization", "Bearer x")]
    for _ in range(2):
        _, headers, _ = fetch(node, "/cc/auth", authorized + steer("Cache-Control: max-age=60"))
        assert status_of(headers) == "Bypass"
    assert (
        status_of(fetch(node, "/cc/auth-public", authorized + steer("Cache-Control: public, max-age=60"))[1])
        == "Miss"
    )
    assert status_of(fetch(node, "/cc/auth-public")[1]) == "Hit"
