"""A real HTTP/1.1 upstream that echoes each request as JSON and misbehaves on request.

It runs its own asyncio event loop in a background thread, so sync tests, async tests (whatever loop
they run on) and proxies started as subprocesses can all reach it. It is written on asyncio streams and
parses HTTP by hand, not with a server framework, because the point is to break the protocol on purpose:
close before the response, after the headers or in the middle of the body, stall, stream slowly.

Steering request headers (case-insensitive):
  X-Echo-Status: 503              status code of the response
  X-Echo-Delay: 0.5               seconds to wait, after reading the request, before answering
  X-Echo-Stream: 5                answer with Transfer-Encoding: chunked in 5 chunks
  X-Echo-Chunk-Delay: 0.1         seconds between those chunks
  X-Echo-Close: before-response | after-headers | mid-body | reset
                                  close the connection at that point (reset: TCP RST instead of FIN)
  X-Echo-Response-Header: N: v    add a response header (repeatable)
  X-Echo-Body-Size: 1000          answer with 1000 bytes of `filler()` instead of the echo

The echo body is JSON: upstream, method, path, query (raw), target, http_version, headers (list of
[name, value] as received), headers_lower (lower-cased name -> value, repeats joined with ", "),
body (text) or body_base64 (when the body is not UTF-8), connection and request_on_connection (1-based
counters, also sent as X-Echo-Connection / X-Echo-Request headers), and client ([ip, port]).
With X-Echo-Stream and no X-Echo-Body-Size, each chunk is one JSON line {"chunk": i, "total": n}.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from types import TracebackType
from typing import Literal, Self

import structlog

log = structlog.get_logger(__name__)

CloseMode = Literal["before-response", "after-headers", "mid-body", "reset"]
CLOSE_MODES: frozenset[str] = frozenset({"before-response", "after-headers", "mid-body", "reset"})
_FILLER_PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyz\n"
_HEAD_LIMIT = 1 << 20
_KEEP_REQUESTS = 10_000
# Bounds for stop(): waiting for just-accepted connections, then for handlers to finish.
_SETTLE_SECONDS = 2.0
_CLOSE_SECONDS = 5.0


def filler(size: int) -> bytes:
    """The filler body returned for X-Echo-Body-Size: a repeating pattern, so corruption shows."""
    repeats = size // len(_FILLER_PATTERN) + 1
    return (_FILLER_PATTERN * repeats)[:size]


@dataclass(frozen=True)
class EchoRequest:
    """One request as the upstream received it (kept for assertions about what a proxy forwarded)."""

    method: str
    target: str
    path: str
    query: str
    http_version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    connection: int
    request_on_connection: int

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)


class _BadRequest(Exception):
    pass


def _split_chunks(data: bytes, parts: int) -> list[bytes]:
    size, extra = divmod(len(data), parts)
    chunks, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        chunks.append(data[start:end])
        start = end
    return chunks


class EchoUpstream:
    """One echo server on `host` and a free (or given) port, served from a background thread."""

    def __init__(self, name: str = "echo", *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.name = name
        self.host = host
        self._port = port
        self._lock = threading.Lock()
        self._connections_accepted = 0
        self._requests_received = 0
        self._requests_served = 0
        self._open_connections = 0
        self._requests: deque[EchoRequest] = deque(maxlen=_KEEP_REQUESTS)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._transports: set[asyncio.Transport] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    # -- public view ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("echo upstream not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def connections_accepted(self) -> int:
        with self._lock:
            return self._connections_accepted

    @property
    def requests_received(self) -> int:
        """Requests fully read (head and body), whether or not they were answered."""
        with self._lock:
            return self._requests_received

    @property
    def requests_served(self) -> int:
        """Requests whose whole response was written (deliberately broken responses do not count)."""
        with self._lock:
            return self._requests_served

    @property
    def open_connections(self) -> int:
        with self._lock:
            return self._open_connections

    @property
    def requests(self) -> list[EchoRequest]:
        """A copy of the requests received so far (oldest first, the last 10,000 at most)."""
        with self._lock:
            return list(self._requests)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def reset_counters(self) -> None:
        with self._lock:
            self._connections_accepted = self._requests_received = self._requests_served = 0
            self._requests.clear()

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start the thread and its loop; returns once the socket listens. A restart keeps the port."""
        if self.running:
            return
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(target=self._run, name=f"echo-upstream-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"echo upstream {self.name} did not start within {timeout}s")
        if self._startup_error is not None:
            self._thread.join(timeout)
            self._thread = None
            raise RuntimeError(f"echo upstream {self.name} failed to start") from self._startup_error

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and every connection, stop the loop, join the thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed between our check and the call
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"echo upstream {self.name} did not stop within {timeout}s")
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start() or logged; the thread must not die silently
            if not self._ready.is_set():
                self._startup_error = exc
            else:
                log.exception("echo_upstream.crashed", upstream=self.name)
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._ready.set()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _TrackingProtocol(
                asyncio.StreamReader(limit=_HEAD_LIMIT), self._on_connection, self._transports
            ),
            self.host,
            self._port or 0,
            reuse_address=True,
        )
        try:
            self._port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stopping.wait()
        finally:
            await self._settle_accepts()
            server.close()
            await self._close_connections()
            await server.wait_closed()

    async def _settle_accepts(self) -> None:
        """Let connections accepted a moment ago finish becoming transports before the server closes.

        On Python 3.11 a connection accepted just before Server.close() whose transport is created just
        after it fails with an AssertionError inside asyncio and leaks its socket. Closing only once every
        task of this loop is a running handler avoids that window: server.close() runs synchronously
        right after the check, and it cancels any accept callback already queued.
        """
        current = asyncio.current_task()
        deadline = time.monotonic() + _SETTLE_SECONDS
        while time.monotonic() < deadline:
            if all(task in self._handlers for task in asyncio.all_tasks() if task is not current):
                return
            await asyncio.sleep(0)

    async def _close_connections(self) -> None:
        """Close every connection and finish every task of this loop before the loop is closed.

        Python 3.11's Server.wait_closed() does not wait for live connections, and any socket, transport
        or task left behind becomes a ResourceWarning (an error in our test run): abort every registered
        transport, cancel every handler (one may be sleeping), and wait until no task is left.
        """
        current = asyncio.current_task()
        deadline = time.monotonic() + _CLOSE_SECONDS
        while True:
            for transport in list(self._transports):
                transport.abort()
            for task in list(self._handlers):
                task.cancel()
            pending = [task for task in asyncio.all_tasks() if task is not current]
            if not pending:
                break
            if time.monotonic() > deadline:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                break
            await asyncio.wait(pending, timeout=0.2)
        await asyncio.sleep(0)  # let the last aborted transports run connection_lost and close their sockets

    # -- connections ----------------------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        with self._lock:
            self._connections_accepted += 1
            self._open_connections += 1
            connection = self._connections_accepted
        reset = False
        try:
            request_no = 0
            while True:
                request_no += 1
                try:
                    request = await self._read_request(reader, writer, connection, request_no)
                except _BadRequest as exc:
                    await self._write_simple(writer, 400, str(exc))
                    return
                if request is None:
                    return
                with self._lock:
                    self._requests_received += 1
                    self._requests.append(request)
                outcome = await self._respond(request, writer)
                if outcome == "reset":
                    reset = True
                    return
                if outcome == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return  # the client went away; nothing to answer
        except asyncio.CancelledError:
            # Only stop() cancels handlers, and the loop is about to close. Returning instead of
            # re-raising is deliberate: on Python 3.11 the stream protocol's done-callback calls
            # task.exception() on our task, which raises for a cancelled task and logs an error.
            return
        finally:
            with self._lock:
                self._open_connections -= 1
            self._handlers.discard(task)
            if reset:
                _abort_with_rst(writer)
            else:
                writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int, request_no: int
    ) -> EchoRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise _BadRequest("connection closed inside the request head") from None
            return None  # a clean close between requests
        except asyncio.LimitOverrunError:
            raise _BadRequest("request head too large") from None
        lines = head[:-4].decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise _BadRequest(f"bad request line {lines[0]!r}") from None
        if not version.startswith("HTTP/1."):
            raise _BadRequest(f"unsupported version {version!r}")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(f"bad header line {line!r}")
            headers.append((name, value.strip()))
        lowered = [(name.lower(), value) for name, value in headers]
        if any(name == "expect" and value.lower() == "100-continue" for name, value in lowered):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self._read_body(reader, lowered)
        path, _, query = target.partition("?")
        return EchoRequest(
            method=method,
            target=target,
            path=path,
            query=query,
            http_version=version[len("HTTP/") :],
            headers=tuple(headers),
            body=body,
            connection=connection,
            request_on_connection=request_no,
        )

    async def _read_body(self, reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
        encodings = [value.lower() for name, value in headers if name == "transfer-encoding"]
        if encodings:
            if encodings[-1].split(",")[-1].strip() != "chunked":
                raise _BadRequest("transfer-encoding without chunked last")
            return await self._read_chunked(reader)
        lengths = {value for name, value in headers if name == "content-length"}
        if not lengths:
            return b""
        if len(lengths) > 1 or not next(iter(lengths)).isdigit():
            raise _BadRequest(f"bad content-length {sorted(lengths)}")
        return await reader.readexactly(int(next(iter(lengths))))

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            try:
                size_line = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError:
                raise _BadRequest("chunk size line too long") from None
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(f"bad chunk size line {size_line!r}") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers: read and ignore
                return bytes(body)
            body += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise _BadRequest("chunk not followed by CRLF")

    # -- responses ------------------------------------------------------------------------------------

    def _echo_document(self, request: EchoRequest, writer: asyncio.StreamWriter) -> bytes:
        lower: dict[str, str] = {}
        for name, value in request.headers:
            key = name.lower()
            lower[key] = f"{lower[key]}, {value}" if key in lower else value
        document: dict[str, object] = {
            "upstream": self.name,
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "target": request.target,
            "http_version": request.http_version,
            "headers": [[name, value] for name, value in request.headers],
            "headers_lower": lower,
            "connection": request.connection,
            "request_on_connection": request.request_on_connection,
            "client": list(writer.get_extra_info("peername") or ())[:2],
        }
        try:
            document["body"] = request.body.decode("utf-8")
        except UnicodeDecodeError:
            document["body"] = None
            document["body_base64"] = base64.b64encode(request.body).decode("ascii")
        return json.dumps(document).encode("utf-8")

    async def _respond(
        self, request: EchoRequest, writer: asyncio.StreamWriter
    ) -> Literal["keep", "close", "reset"]:
        steer = {name.lower(): value for name, value in request.headers if name.lower().startswith("x-echo-")}
        try:
            status = int(steer.get("x-echo-status", "200"))
            delay = float(steer.get("x-echo-delay", "0"))
            stream = int(steer.get("x-echo-stream", "0"))
            chunk_delay = float(steer.get("x-echo-chunk-delay", "0"))
            body_size = int(steer["x-echo-body-size"]) if "x-echo-body-size" in steer else None
        except ValueError as exc:
            await self._write_simple(writer, 400, f"bad X-Echo-* header: {exc}")
            return "close"
        close_mode = steer.get("x-echo-close", "").lower() or None
        if close_mode is not None and close_mode not in CLOSE_MODES:
            await self._write_simple(writer, 400, f"X-Echo-Close must be one of {sorted(CLOSE_MODES)}")
            return "close"
        extra = [
            (name.strip(), value.strip())
            for header, raw in request.headers
            if header.lower() == "x-echo-response-header"
            for name, _, value in [raw.partition(":")]
        ]

        if delay > 0:
            await asyncio.sleep(delay)
        if close_mode == "before-response":
            return "close"
        if close_mode == "reset":
            return "reset"

        keep_alive = _wants_keep_alive(request) and close_mode is None
        if body_size is not None:
            body, content_type = filler(body_size), "application/octet-stream"
        elif stream > 0:
            lines = [json.dumps({"chunk": i, "total": stream}).encode() + b"\n" for i in range(stream)]
            body, content_type = b"".join(lines), "application/x-ndjson"
        else:
            body, content_type = self._echo_document(request, writer), "application/json"
        no_body = request.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        # HTTP/1.0 clients cannot read chunked encoding: stream to them raw, delimited by the close.
        chunked = stream > 0 and request.http_version != "1.0" and not no_body
        if stream > 0 and not chunked:
            keep_alive = False

        bodiless_status = status in (204, 304) or 100 <= status < 200
        head = [
            f"HTTP/1.1 {status} {_reason(status)}",
            "Server: zonegate-echo",
            f"Date: {formatdate(usegmt=True)}",
        ]
        if not bodiless_status:
            head.append(f"Content-Type: {content_type}")
        if chunked:
            head.append("Transfer-Encoding: chunked")
        elif not bodiless_status and (stream == 0 or request.method == "HEAD"):
            # HEAD gets the length the GET would have had; a raw HTTP/1.0 stream is delimited by the close.
            head.append(f"Content-Length: {len(body)}")
        head += [
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            f"X-Echo-Upstream: {self.name}",
            f"X-Echo-Connection: {request.connection}",
            f"X-Echo-Request: {request.request_on_connection}",
        ]
        head += [f"{name}: {value}" for name, value in extra]
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")

        if close_mode == "after-headers":
            writer.write(head_bytes)
            await writer.drain()
            return "close"
        if no_body:
            self._mark_served()
            writer.write(head_bytes)
        elif stream > 0:
            await self._write_stream(writer, head_bytes, body, stream, chunk_delay, chunked, close_mode)
            if close_mode == "mid-body":
                return "close"
        elif close_mode == "mid-body":
            writer.write(head_bytes + body[: len(body) // 2])
            await writer.drain()
            return "close"
        else:
            # One write for head and body: what a real upstream does, and what keeps proxies honest about
            # bodies that arrive in the same segment as the head.
            self._mark_served()
            writer.write(head_bytes + body)
        await writer.drain()
        return "keep" if keep_alive else "close"

    def _mark_served(self) -> None:
        # Counted just before the last bytes go out, not after: a client that has read the whole response
        # must already see it counted (otherwise asserting on the counter races with this thread).
        with self._lock:
            self._requests_served += 1

    async def _write_stream(
        self,
        writer: asyncio.StreamWriter,
        head: bytes,
        body: bytes,
        parts: int,
        chunk_delay: float,
        chunked: bool,
        close_mode: str | None,
    ) -> None:
        writer.write(head)
        await writer.drain()
        pieces = _split_chunks(body, parts)
        # mid-body: send the first half of the chunks, then cut the connection without the last chunk.
        limit = max(1, parts // 2) if close_mode == "mid-body" else parts
        for index, piece in enumerate(pieces[:limit]):
            if index and chunk_delay > 0:
                await asyncio.sleep(chunk_delay)
            if chunked:
                if piece:  # a zero-size chunk would end the body early
                    writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                writer.write(piece)
            await writer.drain()
        if close_mode != "mid-body":
            self._mark_served()
            if chunked:
                writer.write(b"0\r\n\r\n")

    async def _write_simple(self, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        body = (message + "\n").encode()
        writer.write(
            f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()


class _TrackingProtocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol, plus a registry of open transports so that stop() can close them all."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        registry: set[asyncio.Transport],
    ) -> None:
        super().__init__(reader, handler)
        self._registry = registry
        self._tracked: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):  # always, for TCP; the check narrows the type
            self._tracked = transport
            self._registry.add(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._tracked is not None:
            self._registry.discard(self._tracked)
        super().connection_lost(exc)


def _wants_keep_alive(request: EchoRequest) -> bool:
    tokens = {
        token.strip().lower()
        for name, value in request.headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    if request.http_version == "1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN: a "connection reset by peer".
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class EchoUpstreamFactory:
    """Starts echo upstreams on demand (load-balancing tests need several) and stops them all."""

    def __init__(self) -> None:
        self._started: list[EchoUpstream] = []

    def __call__(self, name: str | None = None, *, port: int | None = None) -> EchoUpstream:
        upstream = EchoUpstream(name or f"echo-{len(self._started) + 1}", port=port)
        upstream.start()
        self._started.append(upstream)
        return upstream

    def __iter__(self) -> Iterator[EchoUpstream]:
        return iter(list(self._started))

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        for upstream in reversed(self._started):
            try:
                upstream.stop()
            except Exception as exc:  # keep stopping the others; report after
                errors.append(exc)
        self._started.clear()
        if errors:
            raise errors[0]
