"""Active health checks and DNS refresh: the async half of the ring-balancer (``balancer.py``: the pure half).

``HealthChecker`` owns every background task the balancers need:

- per upstream with active checks, one loop per probe schedule, as lua-resty-healthcheck runs them:
  addresses that are selectable are probed every ``healthchecks.active.healthy.interval`` seconds, the
  others every ``unhealthy.interval`` (0 turns a schedule off; the first round comes one interval after
  start). At most ``concurrency`` probes of one upstream run at once.
- per target host name, one loop that re-resolves it when its answer expires (``dns.Resolver``) and
  hands new addresses to the balancers.

A probe is what Kong's checker sends, on raw asyncio streams: connect (``timeout``), TLS for https
(``https_sni``, else the target's name, ``https_verify_certificate``), ``GET http_path HTTP/1.0`` with
the configured headers and ``Host`` (the upstream's ``host_header`` or the target's host), then only the
status line is read, within ``timeout``. Connect refused or reset, or a TLS failure, counts as a TCP
failure; running out of time as a timeout; a status line that does not parse as HTTP status 0 (an HTTP
failure). ``tcp`` (and ``grpc``/``grpcs``, probed at the TCP/TLS level: there is no gRPC health probe
here) only connects. Every socket is closed whatever happens.

Lifecycle: ``start(balancers)``; ``update(balancers)`` on every new config (keeps the health of targets
that still exist, since the balancers carry it, restarts only the probe loops whose settings changed,
stops the loops of removed upstreams and names); ``stop()`` cancels and awaits every task it owns.
Call ``update`` *before* swapping new balancers in: it resolves new host names first (for at most
``dns_wait`` seconds), so a new hostname target does not answer 503 for its first requests.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Iterable
from typing import Any, Final

import structlog

from zonegate.data_plane.balancer import (
    ActiveCheck,
    Address,
    Balancers,
    HealthSource,
    Outcome,
    UpstreamBalancer,
)
from zonegate.data_plane.dns import Resolution, Resolver

__all__ = ["HealthChecker", "probe"]

log = structlog.get_logger(__name__)

_STATUS_LINE: Final = re.compile(rb"^HTTP/\d+\.\d+\s+(\d+)")
_CLOSE_TIMEOUT: Final = 1.0
_MIN_DNS_DELAY: Final = 0.05  # never spin, even on an answer that expired while it was being applied
_TLS_TYPES: Final = frozenset({"https", "grpcs"})
_CONNECT_ONLY: Final = frozenset({"tcp", "grpc", "grpcs"})


async def probe(
    address: Address,
    check: ActiveCheck,
    *,
    host_header: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Outcome:
    """Probe one address once: the HTTP status, "success" (connect-only), "timeout" or "tcp_failure"."""
    loop = asyncio.get_running_loop()
    ipv6 = ":" in address.host
    sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        async with asyncio.timeout(check.timeout):
            await loop.sock_connect(sock, (address.host, address.port))
    except TimeoutError:
        sock.close()
        return "timeout"
    except OSError:
        sock.close()
        return "tcp_failure"
    except BaseException:
        sock.close()
        raise
    tls = check.type in _TLS_TYPES
    server_hostname: str | None = None
    if not tls and check.type in _CONNECT_ONLY:
        sock.close()
        return "success"
    if tls:
        if ssl_context is None:
            ssl_context = _tls_context(check.https_verify_certificate, None)
        server_hostname = check.https_sni or address.hostname.strip("[]")
    try:
        # asyncio times the handshake out itself (and closes the transport), which a cancellation from
        # outside would not do as cleanly on every Python version.
        reader, writer = await asyncio.open_connection(
            sock=sock,
            ssl=ssl_context if tls else None,
            server_hostname=server_hostname,
            ssl_handshake_timeout=check.timeout if tls else None,
        )
    except (OSError, ssl.SSLError):
        sock.close()
        return "tcp_failure"  # Kong counts a failed handshake (or verification) as a TCP failure
    except BaseException:
        sock.close()
        raise
    if check.type in _CONNECT_ONLY:
        await _close(writer)
        return "success"
    try:
        writer.write(_request(check, host_header or address.hostname))
        async with asyncio.timeout(check.timeout):
            await writer.drain()
            line = await reader.readline()
    except TimeoutError:
        outcome: Outcome = "timeout"
    except (OSError, ssl.SSLError, ValueError):  # ValueError: a status line beyond the stream limit
        outcome = "tcp_failure"
    except BaseException:
        writer.transport.abort()
        raise
    else:
        if not line:
            outcome = "tcp_failure"  # closed before answering
        else:
            match = _STATUS_LINE.match(line)
            outcome = int(match.group(1)) if match else 0
    await _close(writer)
    return outcome


def _request(check: ActiveCheck, host: str) -> bytes:
    lines = [f"GET {check.http_path} HTTP/1.0"]
    has_host = False
    for name, value in check.headers:
        has_host = has_host or name.lower() == "host"
        lines.append(f"{name}: {value}")
    if not has_host:  # Kong always appends Host, even after a configured one; we let the config win
        lines.append(f"Host: {host}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await writer.wait_closed()
    except (OSError, ssl.SSLError, TimeoutError):
        writer.transport.abort()
    except BaseException:
        writer.transport.abort()  # cancelled mid-close: leave no half-closed TLS transport behind
        raise


def _tls_context(verify: bool, trusted_ca: str | None) -> ssl.SSLContext:
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=trusted_ca)


class _Prober:
    """The probe loops of one upstream, with the settings they were started with."""

    __slots__ = ("check", "tasks")

    def __init__(self, check: ActiveCheck, tasks: list[asyncio.Task[None]]) -> None:
        self.check = check
        self.tasks = tasks


class HealthChecker:
    """Runs active probes and DNS refresh for a ``Balancers``; see the module docstring."""

    __slots__ = (
        "_balancers",
        "_dns_errors",
        "_dns_tasks",
        "_dns_wait",
        "_owns_resolver",
        "_probers",
        "_resolver",
        "_ssl_contexts",
        "_trusted_ca",
    )

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        dns_wait: float = 2.0,
        trusted_ca: str | None = None,
    ) -> None:
        """``trusted_ca``: CA bundle for https probes that verify (Kong's ``lua_ssl_trusted_certificate``);
        the system's CAs when None. ``dns_wait``: how long ``start``/``update`` wait for new names."""
        self._resolver = resolver if resolver is not None else Resolver()
        self._owns_resolver = resolver is None
        self._dns_wait = dns_wait
        self._trusted_ca = trusted_ca
        self._balancers: Balancers | None = None
        self._probers: dict[str, _Prober] = {}
        self._dns_tasks: dict[str, asyncio.Task[None]] = {}
        self._dns_errors: dict[str, str | None] = {}
        self._ssl_contexts: dict[bool, ssl.SSLContext] = {}

    @property
    def balancers(self) -> Balancers | None:
        """The balancers being checked (the last ones given to ``start`` or ``update``)."""
        return self._balancers

    async def start(self, balancers: Balancers) -> None:
        if self._balancers is not None:
            raise RuntimeError("health checker already started")
        await self._install(balancers)

    async def update(self, balancers: Balancers) -> None:
        """Check ``balancers`` from now on (starts the checker if it was not)."""
        await self._install(balancers)

    async def stop(self) -> None:
        """Cancel every probe and DNS loop and wait for them; the balancers keep their last state."""
        tasks = [task for prober in self._probers.values() for task in prober.tasks]
        tasks += self._dns_tasks.values()
        self._probers.clear()
        self._dns_tasks.clear()
        await _cancel(tasks)
        if self._balancers is not None:
            self._balancers.set_listener(None)
            self._balancers = None
        if self._owns_resolver:
            await self._resolver.aclose()

    # -- wiring -------------------------------------------------------------------------------------

    async def _install(self, balancers: Balancers) -> None:
        balancers.set_listener(self._on_health_change)
        names = balancers.hostnames()
        new_names = names - self._dns_tasks.keys()
        if new_names:
            await self._resolve_now(balancers, new_names)
        for name in names & self._dns_tasks.keys():
            cached = self._resolver.cached(name)
            if cached is not None:
                _apply(balancers, cached)  # in case these balancers were built without the last answer
        self._balancers = balancers

        stale: list[asyncio.Task[None]] = []
        for name in self._dns_tasks.keys() - names:
            stale.append(self._dns_tasks.pop(name))
            self._dns_errors.pop(name, None)
        for name in new_names:
            self._dns_tasks[name] = asyncio.create_task(self._dns_loop(name), name=f"dns-refresh:{name}")

        wanted = {b.id: b.active_check for b in balancers if b.active_check is not None}
        for upstream_id, prober in list(self._probers.items()):
            if wanted.get(upstream_id) != prober.check:
                stale += self._probers.pop(upstream_id).tasks
        for upstream_id, check in wanted.items():
            if upstream_id not in self._probers:
                self._probers[upstream_id] = self._start_prober(upstream_id, check)
        await _cancel(stale)

    def _start_prober(self, upstream_id: str, check: ActiveCheck) -> _Prober:
        tasks = [
            asyncio.create_task(
                self._probe_loop(upstream_id, check, healthy), name=f"probe:{upstream_id}:{mode}"
            )
            for healthy, mode, interval in (
                (True, "healthy", check.healthy_interval),
                (False, "unhealthy", check.unhealthy_interval),
            )
            if interval > 0
        ]
        return _Prober(check, tasks)

    # -- probing ------------------------------------------------------------------------------------

    async def _probe_loop(self, upstream_id: str, check: ActiveCheck, healthy: bool) -> None:
        loop = asyncio.get_running_loop()
        interval = check.healthy_interval if healthy else check.unhealthy_interval
        next_round = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_round - loop.time()))
            balancer = self._balancers.by_id(upstream_id) if self._balancers is not None else None
            if balancer is None:
                return
            addresses = balancer.probe_targets(healthy)
            if addresses:
                await self._probe_round(upstream_id, balancer, check, addresses)
            # A fixed rate, but a slow round is followed at once rather than by a burst of catch-ups.
            next_round = max(next_round + interval, loop.time())

    async def _probe_round(
        self, upstream_id: str, balancer: UpstreamBalancer, check: ActiveCheck, addresses: Iterable[Address]
    ) -> None:
        slots = asyncio.Semaphore(check.concurrency)
        ssl_context = self._ssl_context(check) if check.type in _TLS_TYPES else None
        async with asyncio.TaskGroup() as group:
            for address in addresses:
                group.create_task(self._probe_one(upstream_id, balancer, check, address, slots, ssl_context))

    async def _probe_one(
        self,
        upstream_id: str,
        balancer: UpstreamBalancer,
        check: ActiveCheck,
        address: Address,
        slots: asyncio.Semaphore,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        async with slots:
            try:
                outcome = await probe(
                    address, check, host_header=balancer.host_header, ssl_context=ssl_context
                )
            except Exception:  # a bug here must not end the loop (TaskGroup would cancel the round)
                log.exception("balancer.probe_error", upstream=balancer.name, target=address.target)
                outcome = "tcp_failure"
        # The balancers may have been swapped while probing: count against the current rules (the
        # address's health state is shared between old and new balancers anyway).
        current = self._balancers.by_id(upstream_id) if self._balancers is not None else None
        (current or balancer).record_probe(address, outcome)

    def _ssl_context(self, check: ActiveCheck) -> ssl.SSLContext:
        verify = check.https_verify_certificate
        context = self._ssl_contexts.get(verify)
        if context is None:
            context = self._ssl_contexts[verify] = _tls_context(verify, self._trusted_ca)
        return context

    # -- DNS ----------------------------------------------------------------------------------------

    async def _resolve_now(self, balancers: Balancers, names: Iterable[str]) -> None:
        tasks = [asyncio.create_task(self._resolver.resolve(name)) for name in names]
        done, pending = await asyncio.wait(tasks, timeout=self._dns_wait)
        await _cancel(pending)  # the lookups themselves go on; their answers land in the cache
        for task in done:
            try:
                resolution = task.result()
            except Exception:
                log.exception("balancer.dns_error")
                continue
            self._note_dns(resolution)
            _apply(balancers, resolution)

    async def _dns_loop(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            resolution = await self._resolver.resolve(name)
            self._note_dns(resolution)
            if self._balancers is not None and _apply(self._balancers, resolution):
                log.info("balancer.dns_changed", name=name, addresses=list(resolution.addresses))
            await asyncio.sleep(max(resolution.expires - loop.time(), _MIN_DNS_DELAY))

    def _note_dns(self, resolution: Resolution) -> None:
        # Log a failing name once per new error, not every retry.
        if self._dns_errors.get(resolution.name) != resolution.error:
            self._dns_errors[resolution.name] = resolution.error
            if resolution.error is not None:
                log.warning(
                    "balancer.dns_failed",
                    name=resolution.name,
                    error=resolution.error,
                    kept=list(resolution.addresses),
                )

    # -- events -------------------------------------------------------------------------------------

    def _on_health_change(
        self, balancer: UpstreamBalancer, address: Address, healthy: bool, source: HealthSource
    ) -> None:
        # An availability change is rare, so logging it is fine even when a passive report (on the
        # request path) caused it.
        (log.info if healthy else log.warning)(
            "balancer.target_healthy" if healthy else "balancer.target_unhealthy",
            upstream=balancer.name,
            target=address.target,
            address=f"{address.host}:{address.port}",
            source=source,
        )


def _apply(balancers: Balancers, resolution: Resolution) -> bool:
    return balancers.apply_dns(
        resolution.name, resolution.addresses, record_type=resolution.record_type, error=resolution.error
    )


async def _cancel(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel and await; gathering the finished ones too retrieves any exception they ended with."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
