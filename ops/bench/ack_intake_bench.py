"""What one data plane's ack costs the control plane, and where that cost comes from.

``hybrid_bench.py`` shows the control plane's CPU per change growing with the number of
subscribers (about 0.1 ms per data plane per change, with 100 subscriber processes on the same
two cores). A change is published once; what grows is taking in one ack per data plane. This
bench takes that intake apart, in one process, over a real TLS nats-server:

- ``nats-py, empty callback``: the floor, what any subscriber pays per message;
- ``DataPlaneCollector._on_ack``: what the control plane does with each (decode, check the
  subject, fold into the pending row);

each with the acks arriving in bursts (one TLS read and one wake-up serve many messages) and
one at a time (``--spacing`` apart: every ack its own read and wake-up, as acks from many data
planes arrive after a change). CPU is this process's ``time.process_time`` (on uvloop, as a
control plane runs) while it receives the acks a separate process publishes. The collector logs
at info, as a control plane does by default (its per-ack line is debug).

Run: ``.venv/bin/python ops/bench/ack_intake_bench.py [--acks 20000] [--spaced 2000]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import structlog
import uvloop

from zonegate.bus.certificates import generate_cluster_certificate
from zonegate.bus.subjects import Names
from zonegate.control_plane.data_planes import DataPlaneCollector
from zonegate.embedded.nats_server import NatsServer, NatsServerTls

NAMES = Names("bench")

# The publisher: a separate process, so its CPU is not counted; ``spacing`` 0 publishes in bursts.
PUBLISHER = """
import asyncio, ssl, sys, nats
from zonegate.bus.v1 import bus_pb2
async def main(url, cert, key, subject, count, spacing):
    context = ssl.create_default_context(cafile=cert)
    context.load_cert_chain(cert, key)
    context.check_hostname = False
    nc = await nats.connect(url, tls=context)
    for i in range(count):
        node = f"dp-{i % 100}"
        ack = bus_pb2.Ack(node_id=node, version=i, config_hash="a" * 32, applied=True,
                          sync_status="normal", serving_version=i, serving_hash="a" * 32,
                          at_ms=1, stream_sequence=i)
        await nc.publish(subject.replace("NODE", node), ack.SerializeToString())
        if spacing:
            await nc.flush()
            await asyncio.sleep(spacing)
        elif i % 100 == 99:
            await nc.flush()
    await nc.flush()
    await nc.close()
url, cert, key, subject, count, spacing = sys.argv[1:]
asyncio.run(main(url, cert, key, subject, int(count), float(spacing)))
"""


class _Bus:
    """The one attribute of a BusConnection the collector's handlers need."""

    def __init__(self, client: Any) -> None:
        self.client = client


async def _receive(server: NatsServer, cert: Path, key: Path, kind: str, count: int, spacing: float) -> float:
    """Microseconds of this process's CPU per ack received."""
    context = ssl.create_default_context(cafile=str(cert))
    context.load_cert_chain(str(cert), str(key))
    context.check_hostname = False
    nc = await nats.connect(server.url, tls=context)
    collector = DataPlaneCollector(None, _Bus(nc), NAMES, purge_delay=3600)  # type: ignore[arg-type]
    received = 0
    done = asyncio.Event()

    async def empty(_msg: Any) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set()

    async def collect(msg: Any) -> None:
        await collector._on_ack(msg)
        await empty(msg)

    handler: Callable[[Any], Awaitable[None]] = empty if kind == "empty" else collect
    await nc.subscribe(NAMES.acks, queue="cp", cb=handler)
    await nc.flush()
    started = time.process_time()
    publisher = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PUBLISHER,
        server.url,
        str(cert),
        str(key),
        NAMES.ack_subject("NODE"),
        str(count),
        str(spacing),
    )
    await asyncio.wait_for(done.wait(), 600)
    cpu = time.process_time() - started
    await publisher.wait()
    await nc.close()
    return cpu / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--acks", type=int, default=20_000, help="acks per burst row")
    parser.add_argument("--spaced", type=int, default=2_000, help="acks per one-at-a-time row")
    parser.add_argument("--spacing", type=float, default=0.001, help="seconds between spaced acks")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))

    base = Path(tempfile.mkdtemp(prefix="zonegate-ack-bench-"))
    cert, key = base / "cluster.crt", base / "cluster.key"
    issued = generate_cluster_certificate()
    cert.write_bytes(issued.cert_pem())
    key.write_bytes(issued.key_pem())
    key.chmod(0o600)
    server = NatsServer(base / "nats", tls=NatsServerTls(cert_file=cert, key_file=key, ca_file=cert))
    server.start()
    rows = []
    try:
        for arrival, count, spacing in (
            ("bursts", args.acks, 0.0),
            ("one at a time", args.spaced, args.spacing),
        ):
            for kind, label in (
                ("empty", "nats-py, empty callback"),
                ("collect", "DataPlaneCollector._on_ack"),
            ):
                # On uvloop, as ``zonegate start`` runs a control plane.
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    us = runner.run(_receive(server, cert, key, kind, count, spacing))
                rows.append((arrival, label, count, us))
    finally:
        server.stop()
    print("\nControl-plane CPU per ack received (this process; publisher in another), TLS nats-server")
    print(f"{'arrival':<14} {'handler':<28} {'acks':>6} {'us CPU/ack':>11}")
    print("-" * 62)
    for arrival, label, count, us in rows:
        print(f"{arrival:<14} {label:<28} {count:>6} {us:>11.1f}")
    print(f"  one at a time: {args.spacing * 1000:g} ms apart, each its own TLS read and event-loop wake-up.")


if __name__ == "__main__":
    main()
