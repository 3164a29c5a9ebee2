"""The proxy fed random and mutated bytes over raw sockets: it answers well-formed responses or closes.

One node (module scope) proxies ``/fuzz`` to an echo upstream. Hypothesis builds inputs of three kinds:
random bytes; one request, pristine or mutated; several requests pipelined, each pristine or mutated.
Mutations are structural (duplicate or conflicting framing headers, bad chunk sizes, oversized or too
many headers, non-ASCII and NUL bytes, absolute-form targets, HTTP/1.0, declared bodies over the limit)
and byte-level (truncate, insert, replace, delete).

After sending an input the client half-closes its side: it will say nothing more. Two properties over
the same inputs, kept apart so that one bug does not hide the other:
- every answer is a well-formed HTTP/1.1 response with an allowed status, nothing follows a
  ``Connection: close``, pristine inputs get exactly one answer per request with the status they asked
  for on a connection that stays usable for one more request, and afterwards a fresh connection gets a
  200, the node process is alive and the Status API answers (the worker never dies or hangs);
- the proxy closes the half-closed connection within a few seconds: a partial request can never
  complete, so waiting for it leaks the connection for good.

Statuses a response may carry, and why:
- 200, 201, 204, 304: the echo upstream's answers (pristine requests steer it with X-Echo-Status).
- 400: the proxy refused a malformed request, or the echo refused what the proxy forwarded.
- 404: a mutated or absolute-form target no longer starts with ``/fuzz``.
- 413: a declared or received body over ZONEGATE_CLIENT_MAX_BODY_SIZE (16k here).
- 494: a request head over 32k or with more than 100 headers.
Not 502/503/504: the echo answers every request it can read at once (no X-Echo-Delay or X-Echo-Close is
ever generated) and there is no ring-balancer; one of these would mean the proxy forwarded a request
whose framing disagrees with what it sent (a desync), which is precisely what this test hunts.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Final

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from harness.echo_upstream import EchoUpstream
from harness.zonegate_node import ZonegateNode, make_node

MAX_BODY: Final = 16 * 1024
ALLOWED_STATUSES: Final = frozenset({200, 201, 204, 304, 400, 404, 413, 494})
STEERED_STATUSES: Final = (200, 201, 204, 304)
# How long the proxy may take to answer and close after the client half-closed. The echo answers at
# once and the service's read_timeout is 1 s, so a healthy proxy needs milliseconds; this is a hang.
CLOSE_DEADLINE: Final = 2.0
PROBE_TIMEOUT: Final = 5.0
# Between responses, a silence this long ends the reading in the well-formedness test (a healthy proxy
# answers the echo in milliseconds; what it never answers is the half-close test's business).
QUIET: Final = 0.3

_STATUS_LINE: Final = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [\x20-\x7e]*")
_HEADER_NAME: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


# -- the node ----------------------------------------------------------------------------------------


class FuzzTarget:
    """The module's node and its echo upstream (a plain class: Hypothesis prints its repr, not fields)."""

    def __init__(self, node: ZonegateNode, upstream: EchoUpstream) -> None:
        self.node = node
        self.upstream = upstream

    def __repr__(self) -> str:  # Hypothesis prints it with every failing example: keep it short
        return f"FuzzTarget(proxy_port={self.node.proxy_port}, upstream={self.upstream.url})"


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    upstream = EchoUpstream("fuzz-echo")
    upstream.start()
    node = make_node(tmp_path_factory.mktemp("fuzz-node"), {"ZONEGATE_CLIENT_MAX_BODY_SIZE": "16k"})
    try:
        node.write_config(
            {
                "_format_version": "3.0",
                "services": [
                    {
                        "name": "fuzz",
                        "url": upstream.url,
                        "read_timeout": 1000,
                        "routes": [{"name": "fuzz", "paths": ["/fuzz"]}],
                    }
                ],
            }
        )
        node.start()
        yield FuzzTarget(node, upstream)
    finally:
        # Short: connections the proxy failed to close would hold its drain for the whole grace period.
        node.stop(timeout=3)
        upstream.stop()


# -- reading responses -------------------------------------------------------------------------------


class Hang(AssertionError):
    """The proxy neither answered nor closed before the deadline."""


class Quiet(Exception):
    """Nothing came for the quiet period, between two responses."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)

    @property
    def closes(self) -> bool:
        value = self.header(b"connection")
        return value is not None and b"close" in value.lower()


class ResponseReader:
    """Reads responses off a socket strictly, with one deadline for everything; a reset counts as EOF."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""
        self.eof = False
        self.quiet = False

    def _fill(self, quiet: float | None = None) -> bool:
        """Read more; False at EOF. ``quiet`` (between responses only): give up after that long silence."""
        if self.eof:
            return False
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise Hang(f"no answer and no close within the deadline; unparsed: {self.buffer[:200]!r}")
        self.sock.settimeout(remaining if quiet is None else min(quiet, remaining))
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            if quiet is not None:
                raise Quiet from None
            raise Hang(
                f"no answer and no close within the deadline; unparsed: {self.buffer[:200]!r}"
            ) from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if not self._fill():
                raise AssertionError(f"connection closed inside a response: {self.buffer[:200]!r}")
        line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise AssertionError(f"connection closed inside a body ({len(self.buffer)} of {size})")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def next_response(self, quiet: float | None = None) -> Response | None:
        """The next response, or None if the connection closed cleanly between responses.

        With ``quiet``, also None (and ``self.quiet`` set) when nothing more came for that long.
        """
        if not self.buffer:
            try:
                if not self._fill(quiet):
                    return None
            except Quiet:
                self.quiet = True
                return None
        line = self._line()
        matched = _STATUS_LINE.fullmatch(line)
        assert matched is not None, f"malformed status line {line!r}"
        status = int(matched.group(1))
        headers = []
        while line := self._line():
            name, colon, value = line.partition(b":")
            assert colon and _HEADER_NAME.fullmatch(name), f"malformed response header {line!r}"
            headers.append((name, value.strip()))
        response = Response(status, tuple(headers), b"")
        return replace(response, body=self._body(response))

    def _body(self, response: Response) -> bytes:
        if response.status < 200 or response.status in (204, 304):
            return b""
        encoding = response.header(b"transfer-encoding")
        if encoding is not None:
            assert encoding.lower() == b"chunked", f"unexpected transfer-encoding {encoding!r}"
            assert response.header(b"content-length") is None, "both Content-Length and chunked"
            body = b""
            while True:
                size_line = self._line()
                assert re.fullmatch(rb"[0-9a-fA-F]+", size_line), f"bad chunk size {size_line!r}"
                size = int(size_line, 16)
                if size == 0:
                    assert self._line() == b"", "trailers after the last chunk"
                    return body
                body += self._exactly(size)
                assert self._line() == b"", "chunk not followed by CRLF"
        length = response.header(b"content-length")
        if length is not None:
            assert length.isdigit(), f"bad content-length {length!r}"
            return self._exactly(int(length))
        assert response.closes, f"a body delimited by the close needs Connection: close: {response}"
        while self._fill():
            pass
        body, self.buffer = self.buffer, b""
        return body

    def rest(self, quiet: float | None = None) -> list[Response]:
        """Every remaining response up to the close (or, with ``quiet``, up to a silence that long)."""
        responses = []
        while (response := self.next_response(quiet)) is not None:
            responses.append(response)
        return responses


# -- building inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestSpec:
    method: bytes
    target: bytes
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    framing: str  # "none", "length" or "chunked"
    chunk_sizes: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        head = [self.method + b" " + self.target + b" " + self.version]
        head += [name + b": " + value for name, value in self.headers]
        if self.framing == "length":
            head.append(b"Content-Length: %d" % len(self.body))
        elif self.framing == "chunked":
            head.append(b"Transfer-Encoding: chunked")
        data = b"\r\n".join(head) + b"\r\n\r\n"
        if self.framing == "chunked":
            # An empty body is the last chunk alone: a zero-size data chunk would end the body early.
            sizes = self.chunk_sizes or ((b"%x" % len(self.body),) if self.body else ())
            for size in sizes:
                data += size + b"\r\n" + self.body + b"\r\n"
            return data + b"0\r\n\r\n"
        return data + self.body


@dataclass(frozen=True)
class Item:
    """One request of an input: its bytes, whether it is pristine, and the status it asks for."""

    data: bytes
    pristine: bool
    status: int
    description: str


_segments = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~", min_size=1, max_size=8)
_header_values = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=24
).map(str.encode)


@st.composite
def pristine_requests(draw: st.DrawFn) -> tuple[RequestSpec, int]:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"]))
    segments = draw(st.lists(_segments, max_size=3))
    target = b"/fuzz" + b"".join(b"/" + s.encode() for s in segments)
    if draw(st.booleans()):
        target += b"?" + draw(st.from_regex(rb"[a-z0-9=&%+]{0,16}", fullmatch=True))
    names = draw(st.lists(st.from_regex(rb"[A-Za-z0-9]{1,10}", fullmatch=True), max_size=5))
    headers = [(b"Host", b"fuzz.test")] + [(b"X-Fuzz-" + name, draw(_header_values)) for name in names]
    status = draw(st.sampled_from(STEERED_STATUSES))
    if status != 200:
        headers.append((b"X-Echo-Status", b"%d" % status))
    framing = draw(st.sampled_from(["none", "length", "chunked"])) if method != b"GET" else "none"
    body = draw(st.binary(max_size=64)) if framing != "none" else b""
    return RequestSpec(method, target, b"HTTP/1.1", tuple(headers), body, framing), status


STRUCTURAL: Final = (
    "duplicate-length",
    "length-and-chunked",
    "bad-chunk-size",
    "huge-header",
    "many-headers",
    "non-ascii",
    "nul",
    "absolute-form",
    "http-1.0",
    "over-limit",
)
BYTE_LEVEL: Final = ("truncate", "insert", "replace", "delete")


@st.composite
def items(draw: st.DrawFn) -> Item:
    spec, status = draw(pristine_requests())
    if draw(st.booleans()):
        return Item(spec.encode(), True, status, "pristine")
    # A mutated request never steers the echo: a mutated X-Echo-Status could ask for any status at all.
    spec = replace(spec, headers=tuple(h for h in spec.headers if h[0] != b"X-Echo-Status"))
    done = draw(st.lists(st.sampled_from(STRUCTURAL), max_size=2, unique=True))
    for kind in done:
        spec = _structural(draw, spec, kind)
    data = spec.encode()
    # Byte-level damage on top of a structural mutation mostly hides it (a truncated oversized header is
    # just a truncated request), so it is added to those only now and then.
    if not done or draw(st.integers(0, 3)) == 0:
        for kind in draw(st.lists(st.sampled_from(BYTE_LEVEL), min_size=1, max_size=2)):
            data = _byte_level(draw, data, kind)
            done.append(kind)
    return Item(data, False, 0, "+".join(done))


def _structural(draw: st.DrawFn, spec: RequestSpec, kind: str) -> RequestSpec:
    headers = list(spec.headers)
    if kind == "duplicate-length":
        body = spec.body or b"abc"
        headers += [(b"Content-Length", b"%d" % len(body)), (b"Content-Length", b"%d" % (len(body) + 1))]
        return replace(spec, method=b"POST", headers=tuple(headers), body=body, framing="none")
    if kind == "length-and-chunked":
        headers.append((b"Content-Length", b"%d" % draw(st.integers(0, 10))))
        return replace(spec, method=b"POST", headers=tuple(headers), framing="chunked")
    if kind == "bad-chunk-size":
        size = draw(st.sampled_from([b"zz", b"-1", b"1" * 20, b"ffffffffffffffffff", b" 3", b"3 ;x", b""]))
        return replace(spec, method=b"POST", framing="chunked", body=spec.body or b"abc", chunk_sizes=(size,))
    if kind == "huge-header":
        headers.append((b"X-Huge", b"h" * draw(st.integers(32 * 1024, 40 * 1024))))
    elif kind == "many-headers":
        headers += [(b"X-Many-%d" % i, b"v") for i in range(draw(st.integers(100, 130)))]
    elif kind == "non-ascii":
        value = draw(st.binary(min_size=1, max_size=8).map(lambda b: bytes(x | 0x80 for x in b)))
        if draw(st.booleans()):
            return replace(spec, target=spec.target + b"/" + value)
        headers.append((b"X-Non-Ascii", value))
    elif kind == "nul":
        if draw(st.booleans()):
            return replace(spec, target=spec.target + b"/a\x00b")
        headers.append((b"X-Nul", b"a\x00b"))
    elif kind == "absolute-form":
        authority = draw(st.sampled_from([b"fuzz.test", b"other.test:8080", b"[::1]", b""]))
        path = draw(st.sampled_from([spec.target, b"/elsewhere", b""]))
        return replace(spec, target=b"http://" + authority + path)
    elif kind == "http-1.0":
        return replace(spec, version=b"HTTP/1.0")
    elif kind == "over-limit":
        headers.append((b"Content-Length", b"%d" % draw(st.integers(MAX_BODY + 1, 10 * MAX_BODY))))
        return replace(spec, method=b"POST", headers=tuple(headers), body=b"x" * 100, framing="none")
    return replace(spec, headers=tuple(headers))


def _byte_level(draw: st.DrawFn, data: bytes, kind: str) -> bytes:
    at = draw(st.integers(0, len(data)))
    if kind == "truncate":
        return data[:at]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if kind == "replace":
        return data[:at] + draw(st.binary(min_size=1, max_size=1)) + data[at + 1 :]
    return data[:at] + data[at + draw(st.integers(1, 16)) :]


@st.composite
def inputs(draw: st.DrawFn) -> list[Item]:
    kind = draw(st.sampled_from(["random", "single", "pipelined"]))
    if kind == "random":
        return [Item(draw(st.binary(max_size=2048)), False, 0, "random bytes")]
    return draw(st.lists(items(), min_size=1, max_size=1 if kind == "single" else 4))


# -- checks --------------------------------------------------------------------------------------------


PROBE: Final = b"GET /fuzz/probe HTTP/1.1\r\nHost: fuzz.test\r\n\r\n"


def send(sock: socket.socket, data: bytes) -> None:
    # The proxy may close early (it refused what it read): what it answered is still readable.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def check_response(response: Response) -> None:
    assert response.status in ALLOWED_STATUSES, f"status {response.status} is not allowed: {response}"


def check_fresh_request(target: FuzzTarget) -> None:
    """The worker is alive and well: a new connection gets a 200, the Status API answers."""
    process = target.node.process
    assert process is not None and process.poll() is None, target.node.read_log()[-3000:]
    conn = http.client.HTTPConnection("127.0.0.1", target.node.proxy_port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", "/fuzz/after", headers={"Host": "fuzz.test"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200
    finally:
        conn.close()
    assert target.node.status()["configuration_hash"] != "0" * 32


def open_and_send(target: FuzzTarget, sequence: list[Item]) -> tuple[socket.socket, ResponseReader]:
    """Connect and send the input; for a pristine input, check its answers and that the connection is
    still usable; then half-close: the client has nothing more to say."""
    note(f"items: {[(item.description, item.data[:120]) for item in sequence]}")
    sock = socket.create_connection(("127.0.0.1", target.node.proxy_port), timeout=PROBE_TIMEOUT)
    try:
        send(sock, b"".join(item.data for item in sequence))
        reader = ResponseReader(sock, time.monotonic() + CLOSE_DEADLINE)
        if all(item.pristine for item in sequence):
            # One answer per request, in order, with the status each asked for; then still usable.
            for item in sequence:
                response = reader.next_response()
                assert response is not None, "the proxy closed before answering a valid request"
                assert response.status == item.status, (response, item)
                assert not response.closes, response
            send(sock, PROBE)
            probe = reader.next_response()
            assert probe is not None and probe.status == 200, probe
            assert b'"/fuzz/probe"' in probe.body
        with contextlib.suppress(OSError):  # already reset by the proxy: nothing left to say anyway
            sock.shutdown(socket.SHUT_WR)
    except BaseException:
        sock.close()
        raise
    return sock, reader


FUZZ_SETTINGS: Final = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@settings(FUZZ_SETTINGS, max_examples=150)
@given(sequence=inputs())
def test_any_bytes_get_well_formed_answers(fuzz_target: FuzzTarget, sequence: list[Item]) -> None:
    sock, reader = open_and_send(fuzz_target, sequence)
    with sock:
        # Whatever else comes, until the close or a silence (the next test is about the close).
        responses = reader.rest(quiet=QUIET)
    note(f"statuses: {[r.status for r in responses]}")
    for kind in {kind for item in sequence for kind in item.description.split("+")}:
        event(f"input: {kind}")  # --hypothesis-show-statistics shows the mix
    for index, response in enumerate(responses):
        event(f"status: {response.status}")
        check_response(response)
        assert not (response.closes and index < len(responses) - 1), "bytes after Connection: close"
    check_fresh_request(fuzz_target)


@settings(FUZZ_SETTINGS, max_examples=60)
@given(sequence=inputs())
def test_a_half_closed_connection_is_closed(fuzz_target: FuzzTarget, sequence: list[Item]) -> None:
    """The client half-closed: a partial request can never complete, so there is nothing left to wait
    for. A proxy that keeps such a connection open leaks it for good (the peer is gone, nothing times
    it out). Complete requests before the close are still answered (the previous test checks them)."""
    sock, reader = open_and_send(fuzz_target, sequence)
    with sock:
        try:
            reader.rest()
        except Hang as exc:
            raise AssertionError(f"the proxy kept a half-closed connection open: {exc}") from None
    check_fresh_request(fuzz_target)
