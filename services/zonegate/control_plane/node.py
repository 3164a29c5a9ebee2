"""The control plane process: the store, and the Admin API on every ``admin_listen`` entry.

Start-up refuses, with one line, a database it cannot reach or whose schema is not ready (not
bootstrapped, or migrations this code needs have not run): Kong once started on a half-migrated
database and pushed an empty config to every data plane (Kong issue #12861). ``ssl`` listeners
use a self-signed certificate generated once under ``<prefix>/ssl/admin-default/``, as the proxy
does for its own. The node id lives in ``<prefix>/node_id`` so it survives restarts, and the pid
goes to ``<prefix>/zonegate.pid`` (the DB-less node's file) so ``zonegate stop`` works the same.
SIGTERM or SIGINT stops accepting, lets in-flight requests finish within the grace period, and
closes the store.

With ``role = traditional`` and ``database = postgres`` this serves the Admin API only: the proxy
half of a traditional node arrives with a later issue.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from typing import Final

import structlog
from aiohttp import web

from zonegate.control_plane.admin_api import build_app
from zonegate.control_plane.admin_api.auth import exposed_listeners
from zonegate.control_plane.errors import SchemaNotReady, StoreError, StoreUnavailable
from zonegate.control_plane.store import Store
from zonegate.data_plane.tls import ensure_default_certificate
from zonegate.node_identity import load_node_id
from zonegate.process_control import PID_FILE, StartError
from zonegate.settings import Listen, Settings

log = structlog.get_logger(__name__)

GRACE_SECONDS: Final = 10.0
ADMIN_CERT_DIR: Final = "ssl/admin-default"


def server_context(settings: Settings) -> ssl.SSLContext:
    cert, key = ensure_default_certificate(settings.prefix / ADMIN_CERT_DIR)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


async def open_store(settings: Settings) -> Store:
    timeout = settings.pg_timeout / 1000
    try:
        return await Store.connect(settings.postgres_dsn(), timeout=timeout)
    except SchemaNotReady as exc:
        raise StartError([str(exc)]) from None
    except StoreUnavailable as exc:
        raise StartError([str(exc)]) from None
    except StoreError as exc:
        raise StartError([f"cannot use the database: {exc}"]) from None


class ControlPlaneNode:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_event = asyncio.Event()
        self.pid_path = settings.prefix / PID_FILE
        self.wrote_pid = False  # a node that failed to start must not remove a running one's pid file

    async def _listen(self, runner: web.AppRunner, listen: Listen) -> None:
        context = server_context(self.settings) if listen.ssl else None
        if listen.http2:
            log.warning("admin.http2_unsupported", listen=str(listen), serving="HTTP/1.1")
        site = web.TCPSite(
            runner,
            listen.host,
            listen.port,
            ssl_context=context,
            backlog=listen.backlog or 511,
            reuse_address=True,
            reuse_port=listen.reuseport or None,
        )
        try:
            await site.start()
        except OSError as exc:
            raise StartError([f"cannot listen on {listen} (admin_listen): {exc.strerror or exc}"]) from None

    def _warn_about_exposure(self) -> None:
        settings = self.settings
        exposed = exposed_listeners(settings.admin_listen)
        if exposed and not settings.admin_token:
            log.warning(
                "admin.exposed_without_token",
                listeners=[str(listen) for listen in exposed],
                hint="set ZONEGATE_ADMIN_TOKEN, or listen on 127.0.0.1 only",
            )
        if settings.role == "traditional":
            log.warning(
                "node.admin_only",
                role=settings.role,
                detail="a traditional node with database = postgres serves the Admin API only for now; "
                "the proxy comes later",
            )

    async def run(self) -> None:
        settings = self.settings
        if not settings.admin_listen:
            raise StartError(
                [
                    f"admin_listen is off: a {settings.role} node with database = postgres would serve "
                    "nothing (its proxy is not available yet)"
                ]
            )
        try:
            settings.prefix.mkdir(parents=True, exist_ok=True)
            node_id = load_node_id(settings.prefix)
        except OSError as exc:
            raise StartError([f"cannot use prefix {settings.prefix}: {exc.strerror or exc}"]) from None
        store = await open_store(settings)
        try:
            app = build_app(store, settings, node_id=node_id)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=GRACE_SECONDS)
            await runner.setup()
            try:
                for listen in settings.admin_listen:
                    await self._listen(runner, listen)
                self._warn_about_exposure()
                self.pid_path.write_text(f"{os.getpid()}\n")
                self.wrote_pid = True
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
                loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
                log.info(
                    "node.started",
                    role=settings.role,
                    node_id=node_id,
                    admin=[str(listen) for listen in settings.admin_listen],
                    config_version=await store.config_version(),
                    pid=os.getpid(),
                )
                await self.stop_event.wait()
                log.info("node.stopping", grace_seconds=GRACE_SECONDS)
            finally:
                await runner.cleanup()
        finally:
            await store.close()
            if self.wrote_pid:
                self.pid_path.unlink(missing_ok=True)
            log.info("node.stopped")
