"""Serving the Admin API on every ``admin_listen`` entry: the control plane's and a DB-less node's.

``ssl`` listeners use a self-signed certificate generated once under ``<prefix>/ssl/admin-default/``,
as the proxy does for its own. A listener that cannot bind stops start-up with one line naming it.
An Admin API reachable from other hosts without an admin token is allowed (a firewall may guard
it) but logged as a warning at start.
"""

from __future__ import annotations

import ssl
from typing import Final

import structlog
from aiohttp import web

from zonegate.control_plane.admin_api.auth import exposed_listeners
from zonegate.data_plane.tls import ensure_default_certificate
from zonegate.process_control import StartError
from zonegate.settings import Listen, Settings

log = structlog.get_logger(__name__)

ADMIN_CERT_DIR: Final = "ssl/admin-default"


def server_context(settings: Settings) -> ssl.SSLContext:
    cert, key = ensure_default_certificate(settings.prefix / ADMIN_CERT_DIR)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


async def _listen(runner: web.AppRunner, settings: Settings, listen: Listen) -> None:
    context = server_context(settings) if listen.ssl else None
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


def warn_about_exposure(settings: Settings) -> None:
    exposed = exposed_listeners(settings.admin_listen)
    if exposed and not settings.admin_token:
        log.warning(
            "admin.exposed_without_token",
            listeners=[str(listen) for listen in exposed],
            hint="set ZONEGATE_ADMIN_TOKEN, or listen on 127.0.0.1 only",
        )


async def start_admin_api(app: web.Application, settings: Settings, *, grace: float) -> web.AppRunner:
    """Serve ``app`` on every ``admin_listen`` entry; ``runner.cleanup()`` stops it within ``grace``."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=grace)
    await runner.setup()
    try:
        for listen in settings.admin_listen:
            await _listen(runner, settings, listen)
    except BaseException:
        await runner.cleanup()
        raise
    warn_about_exposure(settings)
    return runner
