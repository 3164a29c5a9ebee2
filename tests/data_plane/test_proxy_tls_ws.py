"""TLS termination with SNI certificates, upstream TLS, and WebSocket upgrades, through a real node."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.echo_upstream import EchoUpstream
from harness.zonegate_node import ZonegateNode
from zonegate.embedded.ports import free_port


def self_signed(common_name: str, *names: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names or (common_name,)]), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def served_common_name(port: int, server_name: str | None) -> str:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def https_get(port: int, server_name: str, path: str) -> tuple[int, bytes]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_sni_selects_the_certificate(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    exact_cert, exact_key = self_signed("exact.example.test")
    wild_cert, wild_key = self_signed("wildcard.example.test", "*.wild.example.test")
    node: ZonegateNode = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "certificates": [
                {"cert": exact_cert, "key": exact_key, "snis": [{"name": "exact.example.test"}]},
                {"cert": wild_cert, "key": wild_key, "snis": [{"name": "*.wild.example.test"}]},
            ],
            "services": [
                {
                    "name": "svc",
                    "url": echo_upstream.url,
                    "routes": [
                        {
                            "name": "by-sni",
                            "protocols": ["https"],
                            "snis": ["exact.example.test"],
                            "paths": ["/"],
                        }
                    ],
                }
            ],
        }
    )
    assert served_common_name(node.proxy_ssl_port, "exact.example.test") == "exact.example.test"
    assert served_common_name(node.proxy_ssl_port, "a.wild.example.test") == "wildcard.example.test"
    assert served_common_name(node.proxy_ssl_port, "unknown.test") == "localhost"  # the default certificate
    status, body = https_get(node.proxy_ssl_port, "exact.example.test", "/hello")
    assert status == 200
    seen = json.loads(body)
    assert seen["path"] == "/hello"
    assert seen["headers_lower"]["x-forwarded-proto"] == "https"
    # A route that matches on snis does not match another server name.
    status, _ = https_get(node.proxy_ssl_port, "a.wild.example.test", "/hello")
    assert status == 404


class WebSocketEcho:
    """An aiohttp WebSocket echo server in its own thread and loop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._stop())
        self.loop.close()

    async def _start(self) -> None:
        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await ws.send_str(f"echo:{message.data}")
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await ws.send_bytes(message.data[::-1])
            return ws

        app = web.Application()
        app.router.add_get("/ws", handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def __enter__(self) -> WebSocketEcho:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def ws_upstream() -> Iterator[WebSocketEcho]:
    with WebSocketEcho() as server:
        yield server


async def test_websocket_upgrade_is_proxied_both_ways(
    zonegate_node_factory: Any, ws_upstream: WebSocketEcho
) -> None:
    node: ZonegateNode = await asyncio.to_thread(
        zonegate_node_factory,
        {
            "_format_version": "3.0",
            "services": [
                {
                    "name": "ws",
                    "url": f"http://127.0.0.1:{ws_upstream.port}",
                    "routes": [{"paths": ["/ws"], "strip_path": False}],
                }
            ],
        },
    )
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{node.proxy_url}/ws", timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws,
    ):
        for index in range(3):
            await ws.send_str(f"hello {index}")
            message = await ws.receive(timeout=5)
            assert message.data == f"echo:hello {index}"
        await ws.send_bytes(b"\x01\x02\x03")
        message = await ws.receive(timeout=5)
        assert message.data == b"\x03\x02\x01"


def test_upstream_https_with_verification_off(zonegate_node_factory: Any, tmp_path: Path) -> None:
    """An https service: the proxy speaks TLS to it (tls_verify unset means no verification, as Kong)."""
    cert, key = self_signed("upstream.test", "localhost")
    (tmp_path / "up.pem").write_text(cert + key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tmp_path / "up.pem"))
    port = free_port()
    server_ready = threading.Event()
    stop = threading.Event()

    def serve() -> None:
        with socket.create_server(("127.0.0.1", port)) as listener:
            listener.settimeout(0.2)
            server_ready.set()
            while not stop.is_set():
                try:
                    raw, _ = listener.accept()
                except TimeoutError:
                    continue
                with context.wrap_socket(raw, server_side=True) as tls:
                    request = tls.recv(65536)
                    body = json.dumps({"line": request.split(b"\r\n")[0].decode()}).encode()
                    tls.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%b"
                        % (len(body), body)
                    )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    server_ready.wait(5)
    try:
        node: ZonegateNode = zonegate_node_factory(
            {
                "_format_version": "3.0",
                "services": [
                    {"name": "tls", "url": f"https://localhost:{port}/base", "routes": [{"paths": ["/t"]}]}
                ],
            }
        )
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=10)
        conn.request("GET", "/t/x")
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status == 200, body
        assert json.loads(body)["line"] == "GET /base/x HTTP/1.1"
    finally:
        stop.set()
        thread.join(5)
