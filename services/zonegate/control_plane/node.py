"""The control plane process: the store, and the Admin API on every ``admin_listen`` entry.

Start-up refuses, with one line, a database it cannot reach or whose schema is not ready (not
bootstrapped, or migrations this code needs have not run): Kong once started on a half-migrated
database and pushed an empty config to every data plane (Kong issue #12861). Listening is
``admin_api.listeners``' job (``ssl`` listeners get a self-signed certificate). The node id lives
in ``<prefix>/node_id`` so it survives restarts, and the pid goes to ``<prefix>/zonegate.pid``
(the DB-less node's file) so ``zonegate stop`` works the same.
SIGTERM or SIGINT stops accepting, lets in-flight requests finish within the grace period, and
closes the store.

A control plane also runs the hybrid-mode half (``hybrid``): publisher and data-plane collector. A
``traditional`` node with PostgreSQL is a proxy node instead (``data_plane.node`` with the store
as its config source, ``traditional``), which serves this same Admin API.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Final

import structlog

from zonegate.control_plane.admin_api import build_app
from zonegate.control_plane.admin_api.listeners import start_admin_api
from zonegate.control_plane.errors import SchemaNotReady, StoreError, StoreUnavailable
from zonegate.control_plane.hybrid import ControlPlaneHybrid
from zonegate.control_plane.store import Store
from zonegate.node_identity import load_node_id
from zonegate.process_control import PID_FILE, StartError
from zonegate.settings import Settings

log = structlog.get_logger(__name__)

GRACE_SECONDS: Final = 10.0


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

    async def run(self) -> None:
        settings = self.settings
        if not settings.admin_listen:
            raise StartError(["admin_listen is off: a control plane would serve nothing"])
        try:
            settings.prefix.mkdir(parents=True, exist_ok=True)
            node_id = load_node_id(settings.prefix)
        except OSError as exc:
            raise StartError([f"cannot use prefix {settings.prefix}: {exc.strerror or exc}"]) from None
        store = await open_store(settings)
        hybrid: ControlPlaneHybrid | None = None  # None only while it is being built
        try:
            # Built before anything listens: a bad cluster certificate is one line at start-up.
            hybrid = ControlPlaneHybrid(settings, store, node_id)
            app = build_app(store, settings, node_id=node_id)
            runner = await start_admin_api(app, settings, grace=GRACE_SECONDS)
            try:
                if hybrid is not None:
                    await hybrid.start()
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
            if hybrid is not None:
                await hybrid.close()
            await store.close()
            if self.wrote_pid:
                self.pid_path.unlink(missing_ok=True)
            log.info("node.stopped")
