"""A proxy worker process (``zonegate worker``), started and supervised by the config agent.

It serves the proxy listeners (shared with its siblings through SO_REUSEPORT) with the config
the agent last wrote to LMDB, and answers the agent's control messages on stdin/stdout: hello,
reload (re-read LMDB), stats, health, drain. End of stdin means the agent is gone: drain and exit.
SIGINT is ignored so that a Ctrl-C in a terminal, which reaches the whole process group, is
handled by the agent, which then drains the workers in order.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import structlog

from zonegate.core.config import Config
from zonegate.data_plane.lmdb_cache import ConfigCache
from zonegate.data_plane.proxy_host import InProcessProxy
from zonegate.settings import Settings

log = structlog.get_logger(__name__)

DEFAULT_GRACE = 10.0


async def run_worker(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cache = ConfigCache.for_settings(settings, owner=False)
    cached = cache.read()
    proxy = InProcessProxy(settings, reuse_port=True)
    await proxy.start(cached.config if cached is not None else Config())
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)

    async def reply(message: dict[str, Any]) -> None:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()

    grace = DEFAULT_GRACE
    control = loop.create_task(reader.readline())
    stopping = loop.create_task(stop.wait())
    try:
        while True:
            done, _ = await asyncio.wait({control, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                break
            line = control.result()
            if not line:
                log.warning("worker.agent_gone")
                break
            message = json.loads(line)
            op = message.get("op")
            if op == "hello":
                await reply({"ok": True, "config_hash": proxy.config_hash})
            elif op == "reload":
                cached = await asyncio.to_thread(cache.read)
                try:
                    if cached is not None:
                        await proxy.apply(cached.config)
                except Exception as exc:  # keep serving the running config rather than crash-loop
                    log.exception("worker.reload_failed", error=str(exc))
                    await reply({"ok": False, "error": str(exc), "config_hash": proxy.config_hash})
                else:
                    await reply({"ok": True, "config_hash": proxy.config_hash})
            elif op == "stats":
                await reply({"ok": True, "stats": await proxy.stats()})
            elif op == "metrics":
                await reply({"ok": True, "metrics": await proxy.metrics()})
            elif op == "health":
                health = await proxy.upstream_health(
                    str(message["upstream"]), bool(message.get("balancer_health"))
                )
                await reply({"ok": True, "health": health})
            elif op == "drain":
                grace = float(message.get("grace", DEFAULT_GRACE))
                await reply({"ok": True})
                break
            else:
                await reply({"ok": False, "error": f"unknown op {op!r}"})
            control = loop.create_task(reader.readline())
    finally:
        control.cancel()
        stopping.cancel()
        await asyncio.gather(control, stopping, return_exceptions=True)
        await proxy.drain(grace)
        cache.close()
        writer.close()
