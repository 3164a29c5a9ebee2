"""More of the proxy end to end: retries, routing wiring, header hygiene, body limits, broken upstreams,
client timeouts, reloads under load and the Status API. Real ``zonegate start`` processes, real upstreams.

The router and the balancers have their own unit and property tests; here each behaviour is checked
through the wire: what a client sends, what the upstream receives, what the client gets back.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from data_plane.test_proxy_e2e import echo, request, service
from harness.echo_upstream import EchoUpstream, EchoUpstreamFactory
from harness.zonegate_node import ZonegateNode, make_node

NodeFactory = Callable[..., ZonegateNode]

ROOT: list[dict[str, Any]] = [{"paths": ["/"]}]
BAD_UPSTREAM = "An invalid response was received from the upstream server"
UPSTREAM_TIMEOUT = "The upstream server is timing out"


# -- helpers ---------------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout}s")


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def status_get(node: ZonegateNode, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", node.status_port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def active_connections(node: ZonegateNode) -> int:
    return int(node.status()["server"]["connections_active"])


class RawResponse:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


class RawClient:
    """One raw connection to the proxy: send bytes, read responses strictly (knowing which were HEAD)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def head(self) -> tuple[int, list[tuple[str, str]]]:
        status_line = self.reader.readline()
        assert status_line, "the proxy closed the connection instead of answering"
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        status = int(status_line.split()[1])
        headers = []
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        return status, headers

    def response(self, *, head_request: bool = False) -> RawResponse:
        status, headers = self.head()
        response = RawResponse(status, headers, b"")
        if head_request or status in (204, 304) or status < 200:
            return response
        if (response.header("transfer-encoding") or "").lower() == "chunked":
            body = b""
            while size := int(self.reader.readline().strip(), 16):
                body += self.reader.read(size)
                assert self.reader.readline() == b"\r\n"
            assert self.reader.readline() == b"\r\n"
            response.body = body
        elif (length := response.header("content-length")) is not None:
            response.body = self.reader.read(int(length))
        else:
            response.body = self.reader.read()  # delimited by the close
        return response

    def at_eof(self) -> bool:
        """True if the proxy closed the connection (nothing more to read)."""
        try:
            return self.reader.read(1) == b""
        except ConnectionResetError:
            return True


# -- retries and connect failures ----------------------------------------------------------------------


def pair_config(targets: list[str], **service_fields: Any) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "upstreams": [
            {
                "name": "pair.internal",
                # Passive checks count connect failures: three mark a target down, which shows the
                # test that the dead target was really picked (and its requests retried).
                "healthchecks": {"passive": {"unhealthy": {"tcp_failures": 3}}},
                "targets": [{"target": target} for target in targets],
            }
        ],
        "services": [
            {
                "name": "svc",
                "host": "pair.internal",
                "port": 80,
                **service_fields,
                "routes": [{"paths": ["/"]}],
            }
        ],
    }


def target_health(node: ZonegateNode, upstream: str, target: str) -> str:
    _, document = status_get(node, f"/upstreams/{upstream}/health")
    return next(str(item["health"]) for item in document["data"] if item["target"] == target)


def test_a_refused_target_is_retried_on_the_other(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    node = zonegate_node_factory(pair_config([dead, f"127.0.0.1:{echo_upstream.port}"], retries=5))
    statuses = Counter(request(node, "GET", f"/r/{i}")[0] for i in range(20))
    assert statuses == {200: 20}
    assert echo_upstream.requests_received == 20  # each request reached the live target exactly once
    # The dead target was picked (and refused) at least three times: the retries did the work.
    assert target_health(node, "pair.internal", dead) == "UNHEALTHY"


def test_no_retries_and_a_refused_target_is_502(zonegate_node_factory: NodeFactory) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {"name": "dead", "url": f"http://127.0.0.1:{closed_port()}", "retries": 0, "routes": ROOT}
            ],
        }
    )
    started = time.monotonic()
    status, _, body = request(node, "GET", "/")
    assert status == 502
    assert json.loads(body)["message"] == BAD_UPSTREAM
    assert time.monotonic() - started < 2.0


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A loopback port whose accept queue is full: SYNs are dropped, so connecting hangs (no refusal).

    Linux drops a SYN when the listener's accept queue is full; with backlog 0 one queued connection
    fills it. The fillers are never accepted; everything is closed at teardown.
    """
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        for _ in range(3):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        time.sleep(0.1)  # let the handshakes that can complete, complete
        with socket.socket() as check:
            check.settimeout(0.3)
            with pytest.raises(TimeoutError):
                check.connect(("127.0.0.1", port))
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_connect_timeout_is_504(zonegate_node_factory: NodeFactory, blackhole: int) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    "name": "hole",
                    "url": f"http://127.0.0.1:{blackhole}",
                    "connect_timeout": 300,
                    "retries": 0,
                    "routes": ROOT,
                }
            ],
        }
    )
    started = time.monotonic()
    status, _, body = request(node, "GET", "/")
    elapsed = time.monotonic() - started
    assert status == 504
    assert json.loads(body)["message"] == UPSTREAM_TIMEOUT
    assert 0.25 < elapsed < 3.0


def test_connect_timeout_is_retried_on_another_target(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream, blackhole: int
) -> None:
    node = zonegate_node_factory(
        pair_config(
            [f"127.0.0.1:{blackhole}", f"127.0.0.1:{echo_upstream.port}"], connect_timeout=200, retries=2
        )
    )
    statuses = Counter(request(node, "GET", f"/t/{i}")[0] for i in range(4))
    assert statuses == {200: 4}
    assert echo_upstream.requests_received == 4


def test_a_post_the_upstream_received_is_not_replayed(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    """nginx (so Kong) retries a request already sent upstream only if it is idempotent: POST, PATCH and
    LOCK are not re-sent (ngx_http_upstream_next adds NGX_HTTP_UPSTREAM_FT_NON_IDEMPOTENT). A GET is."""
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, retries=2, routes=ROOT)]}
    )
    status, _, _ = request(node, "GET", "/idempotent", headers={"X-Echo-Close": "before-response"})
    assert status == 502
    assert echo_upstream.requests_received == 3  # the first try and two retries
    echo_upstream.reset_counters()
    status, _, body = request(
        node, "POST", "/order", headers={"X-Echo-Close": "before-response"}, body=b'{"buy": 1}'
    )
    assert status == 502
    assert json.loads(body)["message"] == BAD_UPSTREAM
    assert echo_upstream.requests_received == 1, "the POST was sent upstream more than once"


# -- routing through the proxy ----------------------------------------------------------------------------


def routed_service(name: str, upstream: EchoUpstream, **route: Any) -> dict[str, Any]:
    """A service whose path names it, so the upstream path tells which route matched."""
    return {"name": name, "url": f"{upstream.url}/{name}", "routes": [{"name": name, **route}]}


def matched(node: ZonegateNode, method: str, path: str, headers: dict[str, str] | None = None) -> str | None:
    """The name of the route that took the request (first segment upstream), or None for Kong's 404."""
    status, _, body = request(node, method, path, headers=headers)
    if status == 404:
        assert json.loads(body)["message"] == "no Route matched with those values"
        return None
    assert status == 200, body
    return str(echo(body)["path"]).split("/")[1]


def test_hosts_methods_and_headers_route(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(None, start=False)
    node.write_config(
        {
            "_format_version": "3.0",
            "services": [
                routed_service("exact", echo_upstream, hosts=["exact.test"]),
                routed_service("wild", echo_upstream, hosts=["*.wild.test"]),
                routed_service("ported", echo_upstream, hosts=[f"ported.test:{node.proxy_port}"]),
                routed_service("writes", echo_upstream, methods=["POST", "PUT"], paths=["/methods"]),
                routed_service("v2", echo_upstream, paths=["/hdr"], headers={"x-version": ["v2"]}),
                routed_service(
                    "mobile", echo_upstream, paths=["/hdr"], headers={"x-client": ["~*^mobile-[0-9]+$"]}
                ),
            ],
        }
    )
    node.start()
    assert matched(node, "GET", "/", {"Host": "exact.test"}) == "exact"
    assert matched(node, "GET", "/", {"Host": "EXACT.test"}) == "exact"
    assert matched(node, "GET", "/", {"Host": "exact.test.other"}) is None
    assert matched(node, "GET", "/", {"Host": "a.b.wild.test"}) == "wild"
    assert matched(node, "GET", "/", {"Host": "wild.test"}) is None
    assert matched(node, "GET", "/", {"Host": f"ported.test:{node.proxy_port}"}) == "ported"
    assert matched(node, "GET", "/", {"Host": "ported.test"}) is None  # no port: port 80
    assert matched(node, "GET", "/", {"Host": "ported.test:1"}) is None
    assert matched(node, "POST", "/methods") == "writes"
    assert matched(node, "PUT", "/methods/x") == "writes"
    assert matched(node, "GET", "/methods") is None
    assert matched(node, "GET", "/hdr", {"X-Version": "v2"}) == "v2"
    assert matched(node, "GET", "/hdr", {"X-Version": "v3"}) is None
    assert matched(node, "GET", "/hdr", {"X-Client": "Mobile-42"}) == "mobile"
    assert matched(node, "GET", "/hdr", {"X-Client": "mobile-4x"}) is None
    assert matched(node, "GET", "/hdr") is None


def test_regex_paths_priority_and_strip(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                # Both match /items/42; regex_priority decides (without it a UUID would).
                routed_service("anchored", echo_upstream, paths=[r"~/items/(?<id>\d+)$"], regex_priority=10),
                routed_service("open", echo_upstream, paths=[r"~/items/(?<id>\d+)"], regex_priority=1),
                routed_service("prefix", echo_upstream, paths=["/items"]),
                routed_service("versioned", echo_upstream, paths=[r"~/api/v(?<version>\d+)"]),
            ],
        }
    )
    assert matched(node, "GET", "/items/42") == "anchored"
    assert matched(node, "GET", "/items/42/parts") == "open"
    assert matched(node, "GET", "/items/abc") == "prefix"
    # strip_path with a regex strips everything the regex matched.
    status, _, body = request(node, "GET", "/api/v2/users/7?full=1")
    assert status == 200
    assert echo(body)["path"] == "/versioned/users/7"
    assert echo(body)["query"] == "full=1"
    assert echo(body)["headers_lower"]["x-forwarded-prefix"] == "/api/v2"


def test_named_captures_reach_the_balancer(
    zonegate_node_factory: NodeFactory, echo_upstream_factory: EchoUpstreamFactory
) -> None:
    a, b = echo_upstream_factory("a"), echo_upstream_factory("b")
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "upstreams": [
                {
                    "name": "users.internal",
                    "algorithm": "consistent-hashing",
                    "hash_on": "uri_capture",
                    "hash_on_uri_capture": "user",
                    "targets": [{"target": f"127.0.0.1:{u.port}"} for u in (a, b)],
                }
            ],
            "services": [
                {
                    "name": "users",
                    "host": "users.internal",
                    "port": 80,
                    "routes": [{"paths": [r"~/users/(?<user>[a-z0-9]+)"], "strip_path": False}],
                }
            ],
        }
    )
    chosen: dict[str, str] = {}
    for user in range(16):
        seen = {echo(request(node, "GET", f"/users/u{user}/{suffix}")[2])["upstream"] for suffix in "xyz"}
        assert len(seen) == 1, f"user u{user} went to {seen}"
        chosen[f"u{user}"] = seen.pop()
    assert set(chosen.values()) == {"a", "b"}


@pytest.mark.parametrize(
    ("request_path", "upstream_path"),
    [
        # service path "/s" (no trailing slash)
        ("/p1req", "/s/p1req"),  # route /p1, strip_path false
        ("/p1", "/s/p1"),
        ("/p2req", "/s/req"),  # route /p2, strip_path true
        ("/p2", "/s"),
        ("/p2/x", "/s/x"),
        ("/p3/req", "/s/p3/req"),  # route /p3/, strip_path false
        ("/p3/", "/s/p3/"),
        ("/p4/req", "/s/req"),  # route /p4/, strip_path true
        ("/p4/", "/s/"),
        # service path "/s/" (trailing slash)
        ("/p5/req", "/s/req"),  # route /p5, strip_path true
        ("/p5", "/s"),
        ("/p5/", "/s/"),
        ("/p6/x", "/s/p6/x"),  # route /p6, strip_path false
    ],
)
def test_service_and_route_paths_join_as_kong_v0(
    path_join_node: tuple[ZonegateNode, EchoUpstream], request_path: str, upstream_path: str
) -> None:
    node, _ = path_join_node
    status, _, body = request(node, "GET", request_path)
    assert status == 200, body
    assert echo(body)["path"] == upstream_path


@pytest.fixture(scope="module")
def path_join_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ZonegateNode, EchoUpstream]]:
    upstream = EchoUpstream("joins")
    upstream.start()
    node = make_node(tmp_path_factory.mktemp("joins"))
    try:
        node.write_config(
            {
                "_format_version": "3.0",
                "services": [
                    {
                        "name": "plain",
                        "url": f"{upstream.url}/s",
                        "routes": [
                            {"paths": ["/p1"], "strip_path": False},
                            {"paths": ["/p2"], "strip_path": True},
                            {"paths": ["/p3/"], "strip_path": False},
                            {"paths": ["/p4/"], "strip_path": True},
                        ],
                    },
                    {
                        "name": "slashed",
                        "url": f"{upstream.url}/s/",
                        "routes": [
                            {"paths": ["/p5"], "strip_path": True},
                            {"paths": ["/p6"], "strip_path": False},
                        ],
                    },
                ],
            }
        )
        node.start()
        yield node, upstream
    finally:
        node.stop()
        upstream.stop()


def test_preserve_host_query_and_encoded_paths(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                service(
                    "svc",
                    echo_upstream,
                    routes=[
                        {"hosts": ["keep.test"], "preserve_host": True},
                        {"hosts": ["drop.test"], "preserve_host": False},
                        {"paths": ["/enc"], "strip_path": False},
                    ],
                )
            ],
        }
    )
    assert echo(request(node, "GET", "/", headers={"Host": "keep.test"})[2])["headers_lower"]["host"] == (
        "keep.test"
    )
    dropped = echo(request(node, "GET", "/", headers={"Host": "drop.test"})[2])["headers_lower"]
    assert dropped["host"] == f"127.0.0.1:{echo_upstream.port}"
    assert dropped["x-forwarded-host"] == "drop.test"

    query = "a=1&b=%20x&c=%2f&c=&d&e=%zz&f=a+b&g=%7E&h=/?x=y&i=%25&&j=;k=%C3%A9"
    seen = echo(request(node, "GET", f"/enc/q?{query}")[2])
    assert seen["query"] == query  # byte for byte: not decoded, not re-encoded, not reordered
    # Paths are normalised as Kong does (decode what is unreserved, keep reserved escapes upper-cased,
    # remove dot segments, merge slashes), then escaped for the wire.
    for sent, received in [
        ("/enc/caf%C3%A9", "/enc/caf%C3%A9"),
        ("/enc/a%2fb", "/enc/a%2Fb"),
        ("/enc/%7euser", "/enc/~user"),
        ("/enc/a%20b", "/enc/a%20b"),
        ("/enc/%41", "/enc/A"),
        ("/enc/x/../y", "/enc/y"),
        ("/enc//double", "/enc/double"),
    ]:
        status, _, body = request(node, "GET", sent)
        assert status == 200, (sent, body)
        assert echo(body)["path"] == received, sent


# -- headers ------------------------------------------------------------------------------------------------


def test_x_forwarded_for_appends_the_peer(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=ROOT)]}
    )
    seen = echo(request(node, "GET", "/", headers={"X-Forwarded-For": "10.0.0.1, 10.0.0.2"})[2])
    assert seen["headers_lower"]["x-forwarded-for"] == "10.0.0.1, 10.0.0.2, 127.0.0.1"
    with RawClient(node.proxy_port) as client:
        client.send(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.3\r\n\r\n"
        )
        lower = echo(client.response().body)["headers_lower"]
    assert lower["x-forwarded-for"] == "10.0.0.1, 10.0.0.3, 127.0.0.1"


def test_hop_by_hop_request_headers_stay_on_the_client_hop(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    """RFC 9110 7.6.1: a proxy removes Connection and every header it names, plus the hop-by-hop ones.
    Kong does it in its access phase (kong/runloop/handler.lua, "clear hop-by-hop request headers")."""
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=ROOT)]}
    )
    with RawClient(node.proxy_port) as client:
        client.send(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Foo\r\nX-Foo: secret\r\n"
            b"Keep-Alive: timeout=5\r\nTE: gzip\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\n"
            b"X-Kept: yes\r\n\r\n"
        )
        response = client.response()
    assert response.status == 200
    names = {name.lower() for name, _ in echo(response.body)["headers"]}
    assert "x-kept" in names
    assert not names & {"keep-alive", "te", "upgrade", "proxy-connection"}, names
    assert "x-foo" not in names, "a header named in Connection was forwarded upstream"


def test_hop_by_hop_response_headers_stay_on_the_upstream_hop(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    """The same rule on the way back (Kong: "clear hop-by-hop response headers" in header_filter)."""
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=ROOT)]}
    )
    steer = [
        ("X-Echo-Response-Header", value)
        for value in (
            "Connection: X-Bar",
            "X-Bar: internal",
            "Keep-Alive: timeout=3",
            "Upgrade: foo",
            "Trailer: X-T",
            "X-Visible: yes",
        )
    ]
    with RawClient(node.proxy_port) as client:
        client.send(
            b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in steer) + b"\r\n"
        )
        response = client.response()
    assert response.status == 200
    assert response.header("x-visible") == "yes"
    assert not response.names() & {"keep-alive", "upgrade", "trailer"}, response.headers
    assert response.header("connection") == "keep-alive"
    assert response.header("x-bar") is None, "a header the upstream named in Connection reached the client"


def test_head_and_bodiless_statuses_keep_the_connection_usable(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=ROOT)]}
    )
    with RawClient(node.proxy_port) as client:
        client.send(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
        head = client.response(head_request=True)
        assert head.status == 200
        assert int(head.header("content-length") or 0) > 0  # the length a GET would get, no body
        for status in (204, 304):
            client.send(b"GET /b HTTP/1.1\r\nHost: x\r\nX-Echo-Status: %d\r\n\r\n" % status)
            bodiless = client.response()
            assert bodiless.status == status
            assert bodiless.header("transfer-encoding") is None
            assert bodiless.header("content-length") in (None, "0")
        # The next response starts right where the last one ended: nothing was sent as a body.
        client.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        after = client.response()
        assert after.status == 200
        assert echo(after.body)["path"] == "/after"


def test_a_pipelined_request_after_a_bodiless_response_gets_its_own_answer(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=ROOT)]}
    )
    for status in (204, 304):
        with RawClient(node.proxy_port) as client:
            client.send(
                b"GET /first HTTP/1.1\r\nHost: x\r\nX-Echo-Status: %d\r\n\r\n"
                b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n" % status
            )
            assert client.response().status == status
            second = client.response()
            assert second.status == 200, (status, second.status, second.headers)
            assert echo(second.body)["path"] == "/second"


def test_valid_pipelined_requests_are_answered_before_a_malformed_one(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    """nginx reads a pipelined request only after answering the previous one, so a complete request is
    answered even when garbage follows it in the same packet; the garbage then gets its 400."""
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=ROOT)]}
    )
    with RawClient(node.proxy_port) as client:
        client.send(b"GET /valid HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
        first = client.response()
        assert first.status == 200
        assert echo(first.body)["path"] == "/valid"
        assert client.response().status == 400
        assert client.at_eof()


def test_http_1_0_clients_can_read_every_response(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                service(
                    "svc",
                    echo_upstream,
                    routes=[
                        {"paths": ["/buffered"], "strip_path": False},
                        {"paths": ["/streamed"], "strip_path": False, "response_buffering": False},
                    ],
                )
            ],
        }
    )
    with RawClient(node.proxy_port) as client:
        client.send(b"GET /buffered HTTP/1.0\r\n\r\n")
        response = client.response()
        assert response.status == 200
        assert response.header("transfer-encoding") is None
        assert response.header("connection") == "close"
        assert len(response.body) == int(response.header("content-length") or -1)
        assert echo(response.body)["path"] == "/buffered"
        assert client.at_eof()
    with RawClient(node.proxy_port) as client:
        # The upstream answers chunked; an HTTP/1.0 client cannot read chunks: the close ends the body.
        client.send(b"GET /streamed HTTP/1.0\r\nX-Echo-Stream: 3\r\n\r\n")
        response = client.response()
        assert response.status == 200
        assert response.header("transfer-encoding") is None
        assert response.header("connection") == "close"
        assert [json.loads(line)["chunk"] for line in response.body.splitlines()] == [0, 1, 2]


# -- client_max_body_size ---------------------------------------------------------------------------------


def test_client_max_body_size(zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=ROOT)]},
        {"ZONEGATE_CLIENT_MAX_BODY_SIZE": "1k"},
    )
    assert request(node, "POST", "/fits", body=b"x" * 1024)[0] == 200
    status, headers, body = request(node, "POST", "/declared", body=b"x" * 1025)
    assert status == 413
    assert json.loads(body)["message"] == "Request size limit exceeded"
    assert headers["connection"] == "close"
    with RawClient(node.proxy_port) as client:
        client.send(b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(4):  # 4 x 300 bytes: past the limit with the fourth chunk
            client.send(b"12c\r\n" + b"y" * 300 + b"\r\n")
        response = client.response()
        assert response.status == 413
        assert json.loads(response.body)["message"] == "Request size limit exceeded"
        assert client.at_eof()
    assert [r.path for r in echo_upstream.requests] == ["/fits"]  # nothing over the limit went upstream


# -- upstream misbehaviour -----------------------------------------------------------------------------------


def settled_upstream_connections(upstream: EchoUpstream, expected: int) -> bool:
    with contextlib.suppress(AssertionError):
        wait_until(lambda: upstream.open_connections == expected, timeout=3.0)
        return True
    return False


@pytest.mark.parametrize("mode", ["after-headers", "mid-body"])
def test_a_streamed_response_cut_by_the_upstream_is_cut_for_the_client(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream, mode: str
) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                service("svc", echo_upstream, routes=[{"paths": ["/"], "response_buffering": False}])
            ],
        }
    )
    assert request(node, "GET", "/warm")[0] == 200
    baseline = echo_upstream.open_connections
    for steer in (b"", b"X-Echo-Stream: 4\r\n"):
        with RawClient(node.proxy_port) as client:
            client.send(
                b"GET /cut HTTP/1.1\r\nHost: x\r\nX-Echo-Close: %s\r\n%s\r\n" % (mode.encode(), steer)
            )
            status, headers = client.head()
            assert status == 200  # the head was already on its way: the only honest signal left is the close
            rest = client.reader.read()  # to the close
            length = dict((k.lower(), v) for k, v in headers).get("content-length")
            if length is not None:
                assert len(rest) < int(length)
            else:
                assert not rest.endswith(b"0\r\n\r\n")  # no last chunk: the client sees it is truncated
        assert request(node, "GET", "/next")[0] == 200  # a new connection works at once
    assert settled_upstream_connections(echo_upstream, baseline), echo_upstream.open_connections


@pytest.mark.parametrize("mode", ["after-headers", "mid-body", "reset", "before-response"])
def test_a_buffered_response_cut_by_the_upstream_is_502(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream, mode: str
) -> None:
    """With response_buffering (Kong's default) nothing has left for the client yet: a clean 502 beats a
    truncated 200, and the client connection stays usable."""
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, retries=0, routes=ROOT)]}
    )
    assert request(node, "GET", "/warm")[0] == 200
    baseline = echo_upstream.open_connections
    conn = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=10)
    try:
        status, _, body = request(node, "GET", "/cut", headers={"X-Echo-Close": mode}, connection=conn)
        assert status == 502
        assert json.loads(body)["message"] == BAD_UPSTREAM
        assert request(node, "GET", "/same-connection", connection=conn)[0] == 200
    finally:
        conn.close()
    assert request(node, "GET", "/new-connection")[0] == 200
    assert settled_upstream_connections(echo_upstream, baseline), echo_upstream.open_connections


# -- clients that stall or leave ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def leave_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZonegateNode]:
    upstream = EchoUpstream("leave")
    upstream.start()
    node = make_node(tmp_path_factory.mktemp("leave"))
    try:
        node.write_config({"_format_version": "3.0", "services": [service("svc", upstream, routes=ROOT)]})
        node.start()
        yield node
    finally:
        # Short: connections the proxy failed to close would hold its drain for the whole grace period.
        node.stop(timeout=3)
        upstream.stop()


@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"GET /half-a-requ", id="request-line"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-Unfinished: ", id="head"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", id="body"),
    ],
)
def test_a_client_that_leaves_mid_request_leaves_no_connection_behind(
    leave_node: ZonegateNode, partial: bytes
) -> None:
    """Once the client has closed, its partial request can never complete: the proxy must close its side
    too. Keeping it open leaks a socket and a connection slot for good (nothing times a queued exchange out,
    and the header timeout is 60 s)."""
    before = active_connections(leave_node)
    with socket.create_connection(("127.0.0.1", leave_node.proxy_port), timeout=5) as sock:
        sock.sendall(partial)
        wait_until(lambda: active_connections(leave_node) == before + 1, what="the connection to be counted")
    wait_until(
        lambda: active_connections(leave_node) == before, timeout=3.0, what="the proxy to close its side"
    )
    assert request(leave_node, "GET", "/")[0] == 200


def test_a_client_stalling_in_the_request_head_is_cut_off(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=ROOT)]},
        {"ZONEGATE_CLIENT_HEADER_TIMEOUT": "1"},
    )
    with RawClient(node.proxy_port, timeout=5) as client:
        client.send(b"GET /sl")
        started = time.monotonic()
        data = client.reader.read()
    assert time.monotonic() - started < 3
    assert data.startswith(b"HTTP/1.1 408 ")


def test_a_client_stalling_in_the_body_is_cut_off(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=ROOT)]},
        {"ZONEGATE_CLIENT_BODY_TIMEOUT": "1"},
    )
    with RawClient(node.proxy_port, timeout=5) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        started = time.monotonic()
        data = client.reader.read()
    assert time.monotonic() - started < 3
    assert data.startswith(b"HTTP/1.1 408 ")


def test_an_idle_keep_alive_connection_is_closed(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=ROOT)]},
        {"ZONEGATE_KEEPALIVE_TIMEOUT": "1"},
    )
    with RawClient(node.proxy_port, timeout=5) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.response().status == 200
        started = time.monotonic()
        assert client.at_eof()
    assert time.monotonic() - started < 3


# -- reload under load ---------------------------------------------------------------------------------------


def generation(upstream: EchoUpstream, number: int, extra_routes: int) -> dict[str, Any]:
    routes: list[dict[str, Any]] = [{"name": "stable", "paths": ["/stable"]}]
    routes += [{"paths": [f"/gen{number}/r{i}"]} for i in range(extra_routes)]
    return {"_format_version": "3.0", "services": [{"name": "svc", "url": upstream.url, "routes": routes}]}


def test_reloads_under_load_drop_nothing(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(generation(echo_upstream, 0, 10))
    stop = threading.Event()
    failures: list[str] = []
    counts: list[int] = []

    def client(index: int) -> None:
        done = 0
        conn = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=10)
        try:
            while not stop.is_set():
                try:
                    status, _, body = request(node, "GET", f"/stable/{index}", connection=conn)
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(f"client {index}: {exc!r}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=10)
                    continue
                if status != 200:
                    failures.append(f"client {index}: {status} {body[:200]!r}")
                done += 1
        finally:
            conn.close()
            counts.append(done)

    threads = [threading.Thread(target=client, args=(i,), name=f"load-{i}") for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        current = node.status()["configuration_hash"]
        for number in range(1, 11):
            node.write_config(generation(echo_upstream, number, 200 * number))
            node.reload()
            current = node.wait_for_hash_change(current)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures, failures[:5]
    assert len(counts) == 3 and min(counts) > 0, counts
    assert request(node, "GET", "/gen10/r1999")[0] == 200  # the last config is active...
    assert request(node, "GET", "/gen9/r0")[0] == 404  # ...and only the last one


# -- the Status API ----------------------------------------------------------------------------------


def test_status_counters_and_readiness(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    node = zonegate_node_factory(
        {"_format_version": "3.0", "services": [service("svc", echo_upstream, routes=[{"paths": ["/ok"]}])]}
    )
    before = node.status()["server"]
    statuses = [
        request(node, "GET", path)[0] for path in ["/ok", "/ok/1", "/nope", "/ok", "/nope/2", "/ok", "/ok"]
    ]
    assert statuses == [200, 200, 404, 200, 404, 200, 200]
    after = node.status()["server"]
    assert after["total_requests"] - before["total_requests"] == 7
    assert after["connections_accepted"] - before["connections_accepted"] == 7

    baseline = after["connections_active"]
    conns = [http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=5) for _ in range(3)]
    try:
        for conn in conns:
            assert request(node, "GET", "/ok", connection=conn)[0] == 200
        assert node.status()["server"]["connections_active"] == baseline + 3
    finally:
        for conn in conns:
            conn.close()
    wait_until(lambda: active_connections(node) == baseline, what="connections_active back to its baseline")

    assert status_get(node, "/status/ready") == (200, {"message": "ready"})


def test_upstream_health_shape(zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(pair_config([f"127.0.0.1:{echo_upstream.port}"]))
    status, document = status_get(node, "/upstreams/pair.internal/health")
    assert status == 200
    assert set(document) == {"data", "next", "node_id"}
    assert document["next"] is None
    (target,) = document["data"]
    assert target["target"] == f"127.0.0.1:{echo_upstream.port}"
    assert target["weight"] == 100
    assert target["health"] == "HEALTHY"  # passive checks are on and nothing failed
    assert target["data"]["addresses"] == [
        {"ip": "127.0.0.1", "port": echo_upstream.port, "weight": 100, "health": "HEALTHY"}
    ]
    assert status_get(node, "/upstreams/nope.internal/health") == (404, {"message": "Not found"})


def test_upstream_health_names_the_node(
    zonegate_node_factory: NodeFactory, echo_upstream: EchoUpstream
) -> None:
    """Kong's health document carries the node's id (a UUID), so a script polling several nodes can tell
    the answers apart."""
    node = zonegate_node_factory(pair_config([f"127.0.0.1:{echo_upstream.port}"]))
    _, document = status_get(node, "/upstreams/pair.internal/health")
    assert uuid.UUID(str(document["node_id"])), document["node_id"]
