"""The NATS fixtures start a real nats-server: plain, with JetStream, with mTLS, and across restarts."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import ssl
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig

from harness import NatsServerFactory, free_port
from zonegate.embedded.nats_server import NatsServer, NatsServerError
from zonegate.embedded.ports import port_accepts
from zonegate.embedded.tls_material import client_ssl_context, generate_tls_material


async def _connect(url: str, tls: ssl.SSLContext | None = None, **options: object) -> Client:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    client: Client = await nats.connect(url, tls=tls, error_cb=on_error, connect_timeout=2, **options)
    return client


async def test_plain_publish_subscribe_round_trip(nats_server: NatsServer) -> None:
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    client = await _connect(nats_server.url)
    try:
        subscription = await client.subscribe("harness.ping")
        await client.publish("harness.ping", b"hello")
        message = await subscription.next_msg(timeout=2)
        assert message.data == b"hello"
        assert client.connected_url is not None and client.connected_url.port == nats_server.port
    finally:
        await client.close()


async def test_jetstream_stream_add_publish_get(nats_server: NatsServer) -> None:
    client = await _connect(nats_server.url)
    try:
        js = client.jetstream()
        await js.add_stream(StreamConfig(name="HARNESS", subjects=["harness.js.>"]))
        ack = await js.publish("harness.js.one", b"payload-1")
        assert ack.stream == "HARNESS" and ack.seq == 1
        stored = await js.get_msg("HARNESS", seq=1)
        assert stored.data == b"payload-1"
        assert stored.subject == "harness.js.one"
    finally:
        await client.close()


async def test_tls_client_with_certificate_round_trips(nats_server_factory: NatsServerFactory) -> None:
    server = nats_server_factory(tls=True)
    assert server.url.startswith("tls://127.0.0.1:")
    client = await _connect(server.url, nats_server_factory.ssl_context())
    try:
        subscription = await client.subscribe("harness.tls")
        await client.publish("harness.tls", b"secret")
        assert (await subscription.next_msg(timeout=2)).data == b"secret"
        assert client.client_id is not None
    finally:
        await client.close()


# What a refused TLS client sees depends on the TLS version and timing (reset, alert, EOF), never success.
REFUSED = (ssl.SSLError, ConnectionError, nats.errors.Error, asyncio.TimeoutError)


async def _server_logged(server: NatsServer, text: str) -> bool:
    """True once `text` appears in the server log (it may land a moment after the client saw the error)."""
    for _ in range(100):  # a file has no event to wait on: poll for up to two seconds
        if text in server.read_log():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_tls_client_without_certificate_is_refused(nats_server_factory: NatsServerFactory) -> None:
    server = nats_server_factory(tls=True)
    with pytest.raises(REFUSED):
        client = await _connect(
            server.url,
            nats_server_factory.ssl_context(client=None),
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )
        # Reaching this line means the server let us in: close, and let pytest.raises report it.
        await client.close()
    assert await _server_logged(server, "client didn't provide a certificate")


async def test_tls_client_with_certificate_from_another_ca_is_refused(
    nats_server_factory: NatsServerFactory, tmp_path: Path
) -> None:
    server = nats_server_factory(tls=True)
    stranger = generate_tls_material(tmp_path / "other-ca")
    # Trusts our server's CA (so the server is accepted) but presents a client cert the server never signed.
    context = client_ssl_context(nats_server_factory.ca_file, stranger.client().cert, stranger.client().key)
    with pytest.raises(REFUSED):
        client = await _connect(server.url, context, allow_reconnect=False, max_reconnect_attempts=0)
        await client.close()
    assert await _server_logged(server, "certificate signed by unknown authority")


def test_tls_server_refuses_clear_text_protocol(nats_server_factory: NatsServerFactory) -> None:
    server = nats_server_factory(tls=True)
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
        sock_file = sock.makefile("rb")
        try:
            info = json.loads(sock_file.readline().removeprefix(b"INFO "))
            assert info["tls_required"] is True and info["tls_verify"] is True
            # Speak the protocol without upgrading to TLS: the server must not answer the PING.
            sock.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
            rest = b""
            with contextlib.suppress(ConnectionError, TimeoutError):
                while chunk := sock.recv(4096):
                    rest += chunk
        finally:
            sock_file.close()
    assert b"PONG" not in rest


async def test_restart_keeps_jetstream_data_and_port(nats_server_factory: NatsServerFactory) -> None:
    server = nats_server_factory(tls=True)
    port, first_pid = server.port, server.pid
    client = await _connect(server.url, nats_server_factory.ssl_context())
    try:
        js = client.jetstream()
        await js.add_stream(StreamConfig(name="KEEP", subjects=["harness.keep"]))
        await js.publish("harness.keep", b"before-restart")
    finally:
        await client.close()

    # The server API is sync; from async code run it in a thread so the event loop keeps going.
    await asyncio.to_thread(server.restart)

    assert server.port == port and server.pid != first_pid and server.starts == 2
    client = await _connect(server.url, nats_server_factory.ssl_context())
    try:
        stored = await client.jetstream().get_msg("KEEP", seq=1)
        assert stored.data == b"before-restart"
    finally:
        await client.close()


async def test_client_reconnects_after_restart(nats_server: NatsServer) -> None:
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    client = await _connect(
        nats_server.url, reconnected_cb=on_reconnect, reconnect_time_wait=0.05, max_reconnect_attempts=-1
    )
    try:
        subscription = await client.subscribe("harness.again")
        await client.flush()
        await asyncio.to_thread(nats_server.restart)
        await asyncio.wait_for(reconnected.wait(), timeout=10)
        await client.publish("harness.again", b"after")
        assert (await subscription.next_msg(timeout=2)).data == b"after"
    finally:
        await client.close()


def test_monitoring_endpoint_answers_healthz_and_varz(nats_server_factory: NatsServerFactory) -> None:
    server = nats_server_factory(monitoring=True, server_name="harness-monitored")
    assert server.monitoring_port is not None
    connection = http.client.HTTPConnection("127.0.0.1", server.monitoring_port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        health = connection.getresponse()
        assert health.status == 200, health.read()
        health.read()
        connection.request("GET", "/varz")
        varz = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    assert varz["server_name"] == "harness-monitored"
    assert varz["port"] == server.port


def test_factory_stops_every_server(tmp_path: Path) -> None:
    factory = NatsServerFactory(tmp_path)
    first, second = factory(), factory(tls=True)
    assert first.port != second.port
    assert port_accepts("127.0.0.1", first.port) and port_accepts("127.0.0.1", second.port)
    factory.stop_all()
    assert not first.running and not second.running
    assert not port_accepts("127.0.0.1", first.port)
    assert not port_accepts("127.0.0.1", second.port)


def test_bad_config_fails_with_the_server_log(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "broken", extra_config="authorization { users = [ this is not valid")
    with pytest.raises(NatsServerError, match="exited during start-up") as failure:
        server.start()
    assert "log" in str(failure.value)
    assert not server.running


def test_port_given_by_caller_is_used(tmp_path: Path) -> None:
    port = free_port()
    with NatsServer(tmp_path / "fixed", port=port) as server:
        assert server.url == f"nats://127.0.0.1:{port}"
        assert port_accepts("127.0.0.1", port)
    assert not port_accepts("127.0.0.1", port)
