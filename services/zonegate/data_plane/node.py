"""A database-less node (``role = data_plane`` or ``traditional`` with ``database = off``).

Start-up reads the declarative file (``declarative_config``); a bad file stops start-up with
every error located. Then the proxy and the Status API listen; SIGHUP re-reads the file and
swaps the config in, keeping the running one (and saying why) when the new file is bad;
SIGTERM or SIGINT drains in-flight requests within the grace period and exits. The process
id goes to ``<prefix>/zonegate.pid`` for ``zonegate stop`` and ``zonegate reload``.

This is also the process where the hybrid-mode config agent will live: it owns the config and
hands runtimes to the proxy; today its only source is the declarative file.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Final

import structlog

from zonegate.core import declarative
from zonegate.core.config import Config
from zonegate.core.errors import DeclarativeConfigError
from zonegate.data_plane.access_log import AccessLog
from zonegate.data_plane.health import HealthChecker
from zonegate.data_plane.runtime import HeaderOptions, Limits, Runtime, build_runtime
from zonegate.data_plane.server import ProxyServer
from zonegate.data_plane.status_api import build_app, start_status_api
from zonegate.data_plane.tls import CertificateSelector, ensure_default_certificate
from zonegate.settings import Settings

log = structlog.get_logger(__name__)

GRACE_SECONDS: Final = 10.0
PID_FILE: Final = "zonegate.pid"


class StartError(Exception):
    """Start-up cannot go on; ``lines`` are printed as they are (every config error located)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0] if lines else "start-up failed")
        self.lines = lines


def read_declarative(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StartError([f"cannot read declarative_config {path}: {exc.strerror or exc}"]) from None
    try:
        return declarative.loads(text)
    except DeclarativeConfigError as exc:
        lines = exc.lines()
        raise StartError(
            [f"declarative_config {path}: {len(lines)} error{'s' if len(lines) != 1 else ''}"]
            + [f"  {line}" for line in lines]
        ) from None


def runtime_options(settings: Settings) -> tuple[HeaderOptions, Limits]:
    limits = Limits(
        max_header_bytes=settings.max_request_header_size,
        max_headers=settings.max_request_headers,
        max_body_bytes=settings.client_max_body_size,
    )
    return HeaderOptions.from_tokens(settings.headers), limits


class DbLessNode:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: ProxyServer | None = None
        self.stop_event = asyncio.Event()
        self.pid_path = settings.prefix / PID_FILE
        # Resolves target host names and runs active probes; always on, as targets need DNS.
        self.health = HealthChecker()
        self.reloading: asyncio.Task[None] | None = None

    def initial_config(self) -> Config:
        path = self.settings.declarative_config
        if path is None:
            return Config()
        return read_declarative(self.settings.resolve_path(path))

    async def run(self) -> None:
        settings = self.settings
        config = self.initial_config()
        headers, limits = runtime_options(settings)
        runtime = build_runtime(config, headers=headers, limits=limits)
        settings.prefix.mkdir(parents=True, exist_ok=True)
        certificates = None
        if any(listen.ssl for listen in settings.proxy_listen):
            certificates = CertificateSelector(*ensure_default_certificate(settings.prefix / "ssl"))
        access_log = None
        if settings.proxy_access_log is not None:
            access_log = AccessLog(settings.resolve_path(settings.proxy_access_log))
        server = ProxyServer(
            runtime,
            access_log=access_log,
            certificates=certificates,
            pool_size=settings.upstream_keepalive_pool_size,
            pool_max_requests=settings.upstream_keepalive_max_requests,
            pool_idle_timeout=settings.upstream_keepalive_idle_timeout,
        )
        self.server = server
        status_runner = None
        await self.health.start(runtime.balancers)
        try:
            try:
                await server.listen(settings.proxy_listen)
                app = build_app(lambda: self.server, lambda: not server.runtime.config.is_empty())
                if settings.status_listen:
                    status_runner = await start_status_api(app, settings.status_listen)
            except OSError as exc:
                raise StartError([f"cannot listen: {exc.strerror or exc}"]) from None
            self.pid_path.write_text(f"{os.getpid()}\n")
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
            loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
            loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
            log.info(
                "node.started",
                role=settings.role,
                proxy=[str(listen) for listen in settings.proxy_listen],
                status=[str(listen) for listen in settings.status_listen],
                config_hash=runtime.config_hash,
                pid=os.getpid(),
            )
            await self.stop_event.wait()
            log.info("node.stopping", grace_seconds=GRACE_SECONDS)
            await server.drain(GRACE_SECONDS)
        finally:
            if self.reloading is not None:
                self.reloading.cancel()
            await self.health.stop()
            await server.close()
            if status_runner is not None:
                await status_runner.cleanup()
            if access_log is not None:
                access_log.close()
            if self.pid_path.exists():
                self.pid_path.unlink()
            log.info("node.stopped")

    def request_reload(self) -> None:
        """SIGHUP: one reload at a time; a signal during a reload runs another one after it."""
        previous = self.reloading

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await self.reload()

        self.reloading = asyncio.get_running_loop().create_task(run())

    async def reload(self) -> None:
        """Re-read the declarative file; a bad file keeps the running config."""
        server = self.server
        if server is None:
            return
        try:
            config = self.initial_config()
        except StartError as exc:
            log.error("config.reload_rejected", reason=exc.lines[0], errors=exc.lines[1:])
            return
        try:
            runtime: Runtime = build_runtime(config, previous=server.runtime)
        except Exception as exc:  # a config that validates but cannot be compiled must not kill the node
            log.exception("config.reload_failed", error=str(exc))
            return
        # Resolve new target names and start their probes before any request can pick them.
        await self.health.update(runtime.balancers)
        server.set_runtime(runtime)
        log.info("config.reloaded", config_hash=runtime.config_hash)


def signal_running_node(prefix: Path, signum: signal.Signals) -> int:
    """``zonegate stop`` / ``reload``: signal the node whose pid is in the prefix; returns the pid."""
    pid_path = prefix / PID_FILE
    try:
        pid = int(pid_path.read_text().strip())
    except (OSError, ValueError):
        raise StartError([f"no running Zonegate node in {prefix} (no readable {pid_path})"]) from None
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        raise StartError([f"no process {pid} (stale {pid_path})"]) from None
    return pid
