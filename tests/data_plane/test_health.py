"""Active health checks and DNS, against real upstreams on real sockets (the harness's echo servers).

Kong: lua-resty-healthcheck (``run_single_check``, ``checker_callback``: healthy targets probed every
``healthy.interval``, unhealthy ones every ``unhealthy.interval``) and ``kong/runloop/balancer/targets.lua``
(every address of a target's name joins the balancer). Intervals here are 0.05 s to keep the run short.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from harness.echo_upstream import EchoUpstream, EchoUpstreamFactory
from zonegate.data_plane.balancer import Balancers, UpstreamBalancer
from zonegate.data_plane.dns import Resolver
from zonegate.data_plane.health import HealthChecker
from zonegate.embedded.tls_material import TlsMaterial, generate_tls_material

from .test_balancer import NAME, address_of, checks, config, upstream

FAST = 0.05


def active(
    *,
    successes: int = 2,
    failures: int = 2,
    timeout: float = 1.0,
    healthy_interval: float = FAST,
    unhealthy_interval: float = FAST,
    **fields: Any,
) -> dict[str, Any]:
    return {
        "timeout": timeout,
        "healthy": {"interval": healthy_interval, "successes": successes},
        "unhealthy": {
            "interval": unhealthy_interval,
            "http_failures": failures,
            "tcp_failures": failures,
            "timeouts": failures,
        },
        **fields,
    }


def target(echo: EchoUpstream) -> str:
    return f"127.0.0.1:{echo.port}"


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def current(checker: HealthChecker) -> UpstreamBalancer:
    assert checker.balancers is not None
    found = checker.balancers.get(NAME)
    assert found is not None
    return found


@pytest.fixture
async def checker() -> AsyncIterator[HealthChecker]:
    instance = HealthChecker(dns_wait=5.0)
    try:
        yield instance
    finally:
        await instance.stop()


# -- active checks ----------------------------------------------------------------------------------


async def test_a_stopped_target_goes_out_and_comes_back_when_restarted(
    echo_upstream_factory: EchoUpstreamFactory, checker: HealthChecker
) -> None:
    a, b = echo_upstream_factory("a"), echo_upstream_factory("b")
    await checker.start(
        Balancers.build(config(upstream([target(a), target(b)], healthchecks=checks(active=active()))))
    )
    balancer = current(checker)
    b_address = address_of(balancer, target(b))

    b.stop()
    await eventually(lambda: not b_address.healthy)  # two TCP failures (connection refused)
    assert {balancer.select().target for _ in range(10)} == {target(a)}  # type: ignore[union-attr]
    assert balancer.health()[0]["health"] != balancer.health()[1]["health"]

    b.start()  # same port
    await eventually(lambda: b_address.healthy)  # two successful probes
    assert {balancer.select().target for _ in range(10)} == {target(a), target(b)}  # type: ignore[union-attr]


async def test_probes_answered_500_take_targets_out_and_an_update_brings_them_back(
    echo_upstream_factory: EchoUpstreamFactory, checker: HealthChecker
) -> None:
    a, b = echo_upstream_factory("a"), echo_upstream_factory("b")
    failing = active(headers={"X-Echo-Status": ["500"]})
    first = Balancers.build(config(upstream([target(a), target(b)], healthchecks=checks(active=failing))))
    await checker.start(first)
    balancer = current(checker)
    await eventually(lambda: balancer.select() is None)  # every target answers 500: no peer at all
    assert {entry["health"] for entry in balancer.health()} == {"UNHEALTHY"}

    # The same targets with a probe they pass: state carried over (still out) until `successes` probes.
    second = Balancers.build(
        config(upstream([target(a), target(b)], healthchecks=checks(active=active()))), first
    )
    await checker.update(second)
    renewed = current(checker)
    assert renewed.select() is None
    await eventually(lambda: all(address.healthy for address in renewed.addresses()))
    assert renewed.select() is not None


async def test_probe_timeouts_count_as_timeouts(
    echo_upstream_factory: EchoUpstreamFactory, checker: HealthChecker
) -> None:
    slow = echo_upstream_factory("slow")
    config_ = config(
        upstream(
            [target(slow)], healthchecks=checks(active=active(timeout=0.1, headers={"X-Echo-Delay": ["2"]}))
        )
    )
    await checker.start(Balancers.build(config_))
    balancer = current(checker)
    started = time.monotonic()
    await eventually(lambda: balancer.select() is None)
    assert time.monotonic() - started < 1.5  # two 0.1 s timeouts, not two 2 s answers


async def test_the_probe_is_the_request_kong_sends(
    echo_upstream_factory: EchoUpstreamFactory, checker: HealthChecker
) -> None:
    echo = echo_upstream_factory("probed")
    probe = active(http_path="/healthz/deep", headers={"X-Check": ["one", "two"]})
    await checker.start(
        Balancers.build(
            config(upstream([target(echo)], host_header="api.internal", healthchecks=checks(active=probe)))
        )
    )
    await eventually(lambda: echo.requests_received >= 2)
    request = echo.requests[0]
    assert (request.method, request.target, request.http_version) == ("GET", "/healthz/deep", "1.0")
    assert request.header("Host") == "api.internal"
    assert [value for name, value in request.headers if name == "X-Check"] == ["one", "two"]


async def test_only_unhealthy_targets_are_probed_when_the_healthy_interval_is_zero(
    echo_upstream_factory: EchoUpstreamFactory, checker: HealthChecker
) -> None:
    # Kong's documented combination: passive checks take a target out, active ones bring it back.
    a, b = echo_upstream_factory("a"), echo_upstream_factory("b")
    healthchecks = checks(
        active=active(healthy_interval=0, successes=2),
        passive={"unhealthy": {"http_failures": 1}},
    )
    await checker.start(Balancers.build(config(upstream([target(a), target(b)], healthchecks=healthchecks))))
    balancer = current(checker)
    a_address = address_of(balancer, target(a))
    await asyncio.sleep(5 * FAST)
    assert a.requests_received == b.requests_received == 0  # healthy targets: no probes

    balancer.report(a_address, 500)  # a proxied request failed
    assert not a_address.healthy
    await eventually(lambda: a_address.healthy)
    assert a.requests_received >= 2 and b.requests_received == 0


async def test_passive_only_unhealthy_target_does_not_come_back_by_itself(
    echo_upstream_factory: EchoUpstreamFactory, checker: HealthChecker
) -> None:
    a, b = echo_upstream_factory("a"), echo_upstream_factory("b")
    healthchecks = checks(passive={"unhealthy": {"http_failures": 1}, "healthy": {"successes": 1}})
    await checker.start(Balancers.build(config(upstream([target(a), target(b)], healthchecks=healthchecks))))
    balancer = current(checker)
    a_address = address_of(balancer, target(a))
    balancer.report(a_address, 503)
    await asyncio.sleep(10 * FAST)
    assert not a_address.healthy  # no probes configured: it stays out (Kong's circuit breaker)
    assert a.requests_received == 0


async def test_update_keeps_state_and_stops_probing_removed_targets_and_upstreams(
    echo_upstream_factory: EchoUpstreamFactory, checker: HealthChecker
) -> None:
    a, b, c = echo_upstream_factory("a"), echo_upstream_factory("b"), echo_upstream_factory("c")
    probes = checks(active=active(), passive={"unhealthy": {"http_failures": 1}})
    first = Balancers.build(
        config(
            upstream([target(a), target(b)], healthchecks=probes),
            upstream([target(c)], name="other.internal", healthchecks=probes),
        )
    )
    await checker.start(first)
    await eventually(
        lambda: a.requests_received >= 1 and b.requests_received >= 1 and c.requests_received >= 1
    )

    second = Balancers.build(config(upstream([target(a)], healthchecks=probes)), first)
    await checker.update(second)
    await asyncio.sleep(2 * FAST)  # let probes already under way land
    b_seen, c_seen, a_seen = b.requests_received, c.requests_received, a.requests_received
    await asyncio.sleep(6 * FAST)
    assert b.requests_received == b_seen and c.requests_received == c_seen  # no more probes
    assert a.requests_received > a_seen  # a is still probed


async def test_stop_cancels_and_awaits_every_task(
    echo_upstream_factory: EchoUpstreamFactory, checker: HealthChecker
) -> None:
    a = echo_upstream_factory("a")
    await checker.start(
        Balancers.build(config(upstream([target(a), "localhost:1"], healthchecks=checks(active=active()))))
    )
    await eventually(lambda: a.requests_received >= 1)
    await checker.stop()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    seen = a.requests_received
    await asyncio.sleep(4 * FAST)
    assert a.requests_received == seen


# -- DNS ---------------------------------------------------------------------------------------------


async def test_a_target_named_localhost_resolves_to_127_0_0_1(
    echo_upstream_factory: EchoUpstreamFactory, checker: HealthChecker
) -> None:
    echo = echo_upstream_factory("named")
    balancers = Balancers.build(config(upstream([f"localhost:{echo.port}"])))
    assert balancers.get(NAME).select() is None  # type: ignore[union-attr]  # not resolved yet
    await checker.start(balancers)
    address = balancers.get(NAME).select()  # type: ignore[union-attr]
    assert address is not None
    assert (address.host, address.port, address.hostname) == ("127.0.0.1", echo.port, "localhost")
    [entry] = balancers.get(NAME).health()  # type: ignore[union-attr]
    assert entry["data"]["dns"] == "A"
    assert entry["data"]["addresses"][0]["ip"] == "127.0.0.1"


async def test_resolver_caches_until_the_ttl_then_resolves_again() -> None:
    resolver = Resolver(ttl=0.1, timeout=2.0)
    try:
        first = await resolver.resolve("localhost")
        assert first.ok and "127.0.0.1" in first.addresses and first.record_type == "A"
        assert await resolver.resolve("localhost") is first  # cached
        await asyncio.sleep(0.15)
        again = await resolver.resolve("localhost")
        assert again is not first and again.addresses == first.addresses
        literal = await resolver.resolve("10.0.0.1")
        assert literal.addresses == ("10.0.0.1",) and literal.record_type == "A"
    finally:
        await resolver.aclose()


async def test_resolver_reports_failures_and_keeps_stale_addresses() -> None:
    resolver = Resolver(ttl=0.05, error_ttl=0.05, timeout=2.0)
    try:
        failed = await resolver.resolve("no-such-host.invalid")
        assert not failed.ok and failed.addresses == () and failed.error is not None
        # Concurrent callers share one lookup and get the same answer.
        together = await asyncio.gather(*(resolver.resolve("localhost") for _ in range(5)))
        assert len({id(answer) for answer in together}) == 1
    finally:
        await resolver.aclose()


# -- https probes ----------------------------------------------------------------------------------


class TlsServer:
    """A tiny HTTPS server answering 200 to anything, recording the SNI each handshake asked for."""

    def __init__(self, material: TlsMaterial) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(material.server.cert), str(material.server.key))
        self.context.sni_callback = self._sni
        self.server_names: list[str | None] = []
        self.requests = 0
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    def _sni(self, _socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            self._handlers.discard(task)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return generate_tls_material(tmp_path_factory.mktemp("tls"), client_names=())


@pytest.fixture
async def tls_server(tls_material: TlsMaterial) -> AsyncIterator[TlsServer]:
    server = TlsServer(tls_material)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def https_upstream(server: TlsServer, **probe: Any) -> Balancers:
    settings = active(type="https", **probe)
    return Balancers.build(
        config(upstream([f"127.0.0.1:{server.port}"], healthchecks=checks(active=settings)))
    )


async def test_https_probe_verifies_against_the_trusted_ca_with_the_configured_sni(
    tls_server: TlsServer, tls_material: TlsMaterial
) -> None:
    checker = HealthChecker(trusted_ca=str(tls_material.ca_cert))
    try:
        await checker.start(https_upstream(tls_server, https_sni="localhost"))
        await eventually(lambda: tls_server.requests >= 2)
        assert current(checker).select() is not None
        assert set(tls_server.server_names) == {"localhost"}
    finally:
        await checker.stop()


async def test_https_probe_failing_verification_counts_as_tcp_failures(tls_server: TlsServer) -> None:
    checker = HealthChecker()  # the system's CAs do not know the test CA
    try:
        await checker.start(https_upstream(tls_server, https_sni="localhost"))
        await eventually(lambda: current(checker).select() is None)
        assert tls_server.requests == 0
    finally:
        await checker.stop()


async def test_https_probe_without_verification_passes(tls_server: TlsServer) -> None:
    checker = HealthChecker()
    try:
        await checker.start(https_upstream(tls_server, https_verify_certificate=False, failures=1))
        await eventually(lambda: tls_server.requests >= 3)
        assert current(checker).select() is not None
        assert tls_server.server_names and set(tls_server.server_names) == {None}  # an IP target: no SNI
    finally:
        await checker.stop()
