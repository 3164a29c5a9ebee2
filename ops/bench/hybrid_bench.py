"""Hybrid mode end to end: change propagation, control-plane cost per change, snapshot size.

Real processes (``hybrid_stack.py``): PostgreSQL, a TLS nats-server, one ``zonegate start``
control plane, data planes with ``ZONEGATE_WORKERS=1``. Four tables:

1. Propagation: from the Admin API's answer to a change (a ``PATCH`` giving a route a new path)
   to every data plane serving it, at 100 and 10,000 routes (and 100,000 with one data plane),
   with 1 and 10 data planes. Timed by the ack each data plane publishes on the bus right after
   it swapped the new config in (``ConfigAgent._check_and_apply``): the bench listens on the ack
   subjects, which costs the data planes nothing, where polling their Status API would take CPU
   from the very processes being timed. After every change each data plane's proxy is asked for
   the new path and must answer 200 (the route leads to an upstream inside this script), so an
   ack sent before the proxy served the change fails the run. One row times changes by polling
   ``/status`` (``clustering.config_version``) instead, as a cross-check of the method.
   Baseline, same run, same server: one plain NATS message to N subscriber processes and all
   their replies back, the floor for "announce, then ack".
2. Control-plane CPU per change with 1, 10 and 100 subscribers: small processes that connect
   with the cluster certificate, heartbeat, listen on the notify subject, read the newest
   snapshot from the config stream (``config_stream.read_latest``) and ack, as a data plane
   does. CPU is utime + stime from /proc of the CP process (and of nats-server) across N changes,
   also net of what the same process burns idle over the same time. What grows with the
   subscribers is taking in their acks: ``ack_intake_bench.py`` takes one ack's cost apart.
3. Snapshot size and data-plane decode/apply time at 10,000 and 100,000 routes, from the CP's
   ``publisher.published`` and the DP's ``config_agent.applied`` log lines, and the time from
   ``POST /config`` to the data plane(s) serving the new config.
4. Where the time goes: the same codec and compile steps on the same configs, in this process,
   with the cluster stopped (the pure-CPU floor of one change).

Changes are spaced by ``--gap`` (default: publish interval + 50 ms) after the previous one was
served everywhere, so each goes out in its own snapshot rather than waiting out
``cluster_publish_interval`` (least time between two publications, default 0.1 s). A scenario
stops after ``--changes`` changes or ``--budget`` seconds, whichever comes first (at least 3).
The machine may have 2 cores shared with other work: nothing is pinned, and 10 data planes
applying a big config at once queue for those cores; the load average is printed.

Run: ``.venv/bin/python ops/bench/hybrid_bench.py [--changes 50] [--budget 60] [--big-routes 100000]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import zstandard
from hybrid_stack import Process, Stack, cpu_seconds, log_events

from zonegate.bus.subjects import Names
from zonegate.bus.v1 import bus_pb2
from zonegate.core import config_delta, consistency, declarative
from zonegate.core.canonical import EncodingCache, config_hash, encode_config
from zonegate.core.config import Config
from zonegate.data_plane.heap import without_gc
from zonegate.data_plane.lmdb_cache import ConfigCache
from zonegate.data_plane.runtime import build_runtime
from zonegate.node_identity import load_node_id

HERE = Path(__file__).resolve().parent
ROUTES_PER_SERVICE = 5
CHANGE_ROUTE = "bench-change"
PING_PREFIX = "zgbench.ping"  # the floor's subject; bench-only, never a Zonegate subject
MIN_CHANGES = 3


# -- configs ----------------------------------------------------------------------------------------


def build_document(routes: int, upstream_url: str) -> dict[str, Any]:
    """``routes`` routes (5 per service, path and host routes mixed) plus the route the changes move."""
    services: list[dict[str, Any]] = []
    for index in range(-(-routes // ROUTES_PER_SERVICE)):
        count = min(ROUTES_PER_SERVICE, routes - index * ROUTES_PER_SERVICE)
        service_routes: list[dict[str, Any]] = []
        for slot in range(count):
            route: dict[str, Any] = {"name": f"r-{index}-{slot}", "paths": [f"/v1/svc-{index}/r{slot}"]}
            if slot % 2:
                route["hosts"] = [f"svc-{index}.example.com"]
                route["methods"] = ["GET", "POST"]
            service_routes.append(route)
        services.append(
            {
                "name": f"svc-{index}",
                "url": f"http://backend-{index % 50}.internal:8080/api/{index}",
                "routes": service_routes,
            }
        )
    services.append(
        {
            "name": "bench-changes",
            "url": upstream_url,
            "routes": [{"name": CHANGE_ROUTE, "paths": ["/change-0"]}],
        }
    )
    return {"_format_version": "3.0", "services": services}


class _Ok(asyncio.Protocol):
    """The upstream of the changed route: 200 to anything, so "serving" means a proxied 200."""

    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:  # GETs without bodies only
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.transport.write(self.RESPONSE)


# -- statistics and tables --------------------------------------------------------------------------


def pct(values: Sequence[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()
) -> None:
    """Numbers right-aligned, text left-aligned, one line per row, notes under it."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(header)]
    text = [isinstance(value, str) for value in rows[0]] if rows else [False] * len(header)

    def render(row: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if left else c.rjust(w) for c, w, left in zip(row, widths, text, strict=True)
        ).rstrip()

    line = render(header)
    print(f"\n{title}")
    print(line)
    print("-" * len(line))
    for row in cells:
        print(render(row))
    for note in notes:
        print(f"  {note}")
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # nan: not measured
            return "-"
        return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


# -- the bench's own bus client: acks in, pings out -------------------------------------------------


def cluster_tls(stack: Stack) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_cert_chain(str(stack.cert), str(stack.key))
    context.check_hostname = False  # shared mode: the cluster certificate is pinned, as the nodes do
    context.load_verify_locations(cafile=str(stack.cert))
    return context


@dataclass
class Acks:
    """When each data plane first reported serving each version, on this process's clock."""

    serving: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_message(self, msg: Any) -> None:
        now = time.perf_counter()
        ack = bus_pb2.Ack.FromString(msg.data)
        if ack.applied:
            self.serving.setdefault(ack.node_id, []).append((int(ack.serving_version), now))
            self.event.set()

    def first_at(self, node: str, version: int) -> float | None:
        for served, at in self.serving.get(node, ()):
            if served >= version:
                return at
        return None

    async def wait(self, nodes: Sequence[str], version: int, limit: float) -> dict[str, float]:
        deadline = time.monotonic() + limit
        while True:
            found = {node: self.first_at(node, version) for node in nodes}
            if all(at is not None for at in found.values()):
                return {node: at for node, at in found.items() if at is not None}
            self.event.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [node for node, at in found.items() if at is None]
                raise TimeoutError(f"no ack of version {version} from {missing} in {limit}s")
            try:
                async with asyncio.timeout(left):
                    await self.event.wait()
            except TimeoutError:
                pass


def node_id(dp: Process) -> str:
    return load_node_id(Path(dp.env["ZONEGATE_PREFIX"]))


@dataclass
class Subscribers:
    """One ``hybrid_stack.py subscribers`` process and the node ids of the processes it forked."""

    process: asyncio.subprocess.Process
    node_ids: list[str]


class Bench:
    def __init__(self, stack: Stack, args: argparse.Namespace) -> None:
        self.stack = stack
        self.args = args
        self.names = Names(stack.cluster_env()["ZONEGATE_CLUSTER_NAME"])
        self.acks = Acks()
        self.version = 0  # the CP's config version: +1 per POST /config and per PATCH (one transaction each)
        self.change = 0
        self.cp: Process | None = None
        self.session: aiohttp.ClientSession | None = None
        self.nc: Any = None
        self.upstream: asyncio.Server | None = None
        self.subscribers: list[Subscribers] = []
        self.floor: dict[int, float] = {}

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900))
        self.upstream = await asyncio.get_running_loop().create_server(_Ok, "127.0.0.1", 0)
        self.nc = await nats.connect(self.stack.nats.url, tls=cluster_tls(self.stack), name="hybrid-bench")
        await self.nc.subscribe(self.names.acks, cb=self.acks.on_message)
        interval = str(self.args.publish_interval)
        self.cp = await asyncio.to_thread(self.stack.add_cp, cluster_publish_interval=interval)
        self.version = int((await self.get_json(f"{self.admin}/status"))["config_version"])

    async def close(self) -> None:
        await self.stop_subscribers()
        if self.session is not None:
            await self.session.close()
        if self.nc is not None:
            await self.nc.close()
        if self.upstream is not None:
            self.upstream.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self.session is not None
        return self.session

    @property
    def admin(self) -> str:
        assert self.cp is not None
        return self.cp.url("admin")

    async def get_json(self, url: str) -> Any:
        async with self.http.get(url) as response:
            return await response.json()

    async def post_config(self, routes: int) -> tuple[float, float]:
        """POST /config; returns (seconds until the 201, perf_counter at the 201)."""
        assert self.upstream is not None
        port = self.upstream.sockets[0].getsockname()[1]
        document = build_document(routes, f"http://127.0.0.1:{port}")
        started = time.perf_counter()
        async with self.http.post(f"{self.admin}/config", json=document) as response:
            body = await response.read()
            assert response.status == 201, (response.status, body[:2000])
        done = time.perf_counter()
        self.version += 1
        return done - started, done

    async def make_change(self) -> float:
        """Give the bench route a new path; returns perf_counter when the Admin API answered."""
        self.change += 1
        body = {"paths": [f"/change-{self.change}"]}
        async with self.http.patch(f"{self.admin}/routes/{CHANGE_ROUTE}", json=body) as response:
            text = await response.read()
            done = time.perf_counter()
            assert response.status == 200, (response.status, text[:2000])
        self.version += 1
        return done

    async def proxied_status(self, dp: Process, path: str) -> int:
        async with self.http.get(f"{dp.url('proxy')}{path}") as response:
            await response.read()
            return response.status

    async def wait_applied(self, dps: Sequence[Process], limit: float = 900) -> dict[str, float]:
        return await self.acks.wait([node_id(dp) for dp in dps], self.version, limit)

    # -- 1. propagation -----------------------------------------------------------------------------

    async def propagation(
        self, routes: int, dps: Sequence[Process], *, changes: int = 0, poll: float = 0
    ) -> list[Any]:
        """A scenario of changes (``--changes`` unless given); one row of the propagation table."""
        changes = changes or self.args.changes
        assert self.cp is not None
        nodes = [node_id(dp) for dp in dps]
        offsets = {node.name: node.log_size() for node in [self.cp, *dps]}
        last_dp: list[float] = []
        every_dp: list[float] = []
        first_version = self.version + 1
        started = time.monotonic()
        while len(last_dp) < changes and (
            len(last_dp) < MIN_CHANGES or time.monotonic() - started < self.args.budget
        ):
            await asyncio.sleep(self.args.gap)
            sent = await self.make_change()
            if poll:
                times = await self._poll_status(dps, self.version, poll)
            else:
                times = await self.acks.wait(nodes, self.version, 120)
            delays = [(at - sent) * 1000 for at in times.values()]
            last_dp.append(max(delays))
            every_dp.extend(delays)
            path = f"/change-{self.change}"
            codes = await asyncio.gather(*(self.proxied_status(dp, path) for dp in dps))
            if any(code != 200 for code in codes):
                raise AssertionError(f"version {self.version} acked but {path} answered {codes}")
        cp_log = self.cp.log_path
        # A delta is announced (and served) before the CP stores the full snapshot and logs it.
        for _ in range(100):
            logged = log_events(cp_log, "publisher.published", offsets[self.cp.name])
            if any(e["version"] == self.version for e in logged):
                break
            await asyncio.sleep(0.05)
        exported = [e for e in log_events(cp_log, "store.exported", offsets[self.cp.name])]
        published = [e for e in log_events(cp_log, "publisher.published", offsets[self.cp.name])]
        applied = [e for dp in dps for e in log_events(dp.log_path, "config_agent.applied", offsets[dp.name])]
        exported = [e for e in exported if e["version"] >= first_version]
        published = [e for e in published if e["version"] >= first_version]
        applied = [e for e in applied if e["version"] >= first_version]
        _check_logs(dps, offsets, [e["version"] for e in published])
        floor = self.floor.get(len(dps), float("nan"))
        return [
            routes,
            len(dps),
            f"/status every {poll * 1000:.0f} ms" if poll else "ack",
            len(last_dp),
            median(last_dp),
            pct(last_dp, 99),
            max(last_dp),
            median(every_dp),
            f"{len(published)}/{len(last_dp)}",
            median([e["ms"] for e in exported]),
            median([e["build_ms"] for e in published]),
            median([e["total_ms"] for e in published]),
            median([e["decode_ms"] for e in applied]),
            median([e["apply_ms"] for e in applied]),
            floor,
            median(last_dp) / floor,
        ]

    async def _poll_status(self, dps: Sequence[Process], version: int, interval: float) -> dict[str, float]:
        found: dict[str, float] = {}
        deadline = time.monotonic() + 120
        while len(found) < len(dps):
            pending = [dp for dp in dps if dp.name not in found]
            bodies = await asyncio.gather(*(self.get_json(f"{dp.url('status')}/status") for dp in pending))
            now = time.perf_counter()
            for dp, body in zip(pending, bodies, strict=True):
                if body["clustering"]["config_version"] >= version:
                    found[dp.name] = now
            if time.monotonic() > deadline:
                raise TimeoutError(f"version {version} not served by every DP")
            await asyncio.sleep(interval)
        return found

    # -- baseline: NATS fan-out round trip ----------------------------------------------------------

    async def ping_floor(self, fan_out: int, rounds: int = 50) -> float:
        """Median ms from publishing one message to the last of ``fan_out`` replies."""
        inbox = self.nc.new_inbox()
        replies: asyncio.Queue[float] = asyncio.Queue()

        async def on_reply(_msg: Any) -> None:
            replies.put_nowait(time.perf_counter())

        subscription = await self.nc.subscribe(inbox, cb=on_reply)
        samples = []
        try:
            for _ in range(rounds):
                sent = time.perf_counter()
                await self.nc.publish(f"{PING_PREFIX}.{fan_out}", b"ping", reply=inbox)
                last = sent
                for _ in range(fan_out):
                    last = await asyncio.wait_for(replies.get(), 10)
                samples.append((last - sent) * 1000)
                await asyncio.sleep(0.01)
        finally:
            await subscription.unsubscribe()
        return median(samples)

    # -- 2. CP CPU per change -----------------------------------------------------------------------

    async def start_subscribers(self, total: int) -> list[str]:
        """Bring the number of subscriber processes up to ``total``; returns every node id."""
        have = sum(len(group.node_ids) for group in self.subscribers)
        process = await asyncio.create_subprocess_exec(
            *[sys.executable, str(HERE / "hybrid_stack.py"), "subscribers"],
            *["--nats", self.stack.nats.url, "--cert", str(self.stack.cert), "--key", str(self.stack.key)],
            *["--cluster", self.names.cluster, "--first", str(have), "--count", str(total - have)],
            *["--ping-prefix", PING_PREFIX],
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        group = Subscribers(process, [])
        self.subscribers.append(group)
        assert process.stdout is not None
        while len(group.node_ids) < total - have:
            line = await asyncio.wait_for(process.stdout.readline(), 120)
            if not line.startswith(b"ready "):
                raise RuntimeError(f"a subscriber did not start: {line!r}")
            group.node_ids.append(line.split()[1].decode())
        return [node for g in self.subscribers for node in g.node_ids]

    async def stop_subscribers(self) -> None:
        for group in self.subscribers:
            if group.process.returncode is None:
                group.process.terminate()
        for group in self.subscribers:
            await group.process.wait()
        self.subscribers = []

    async def cp_cost(self, nodes: Sequence[str]) -> list[Any]:
        assert self.cp is not None
        changes = self.args.cost_changes
        pids = {"cp": self.cp.pid, "nats": self.stack.nats.pid or 0}
        await asyncio.sleep(2)  # let start-up work settle: first reads, heartbeats, the collector's flush
        idle_cpu, idle_wall = await _cpu_during(pids, asyncio.sleep(self.args.idle))

        async def run() -> None:
            for _ in range(changes):
                await asyncio.sleep(self.args.gap)
                await self.make_change()
                await self.acks.wait(nodes, self.version, 60)

        busy_cpu, busy_wall = await _cpu_during(pids, run())
        net = {name: busy_cpu[name] - idle_cpu[name] / idle_wall * busy_wall for name in pids}
        return [
            len(nodes),
            changes,
            busy_cpu["cp"] / changes * 1000,
            idle_cpu["cp"] / idle_wall * 1000,
            net["cp"] / changes * 1000,
            busy_cpu["nats"] / changes * 1000,
            net["nats"] / changes * 1000,
            self.floor[len(nodes)],
        ]


def _check_logs(dps: Sequence[Process], offsets: dict[str, int], published: list[int]) -> None:
    """Say so when a DP applied a version twice or missed one, or its watchdog had to step in."""
    versions = sorted(published)
    for dp in dps:
        applied = log_events(dp.log_path, "config_agent.applied", offsets[dp.name])
        mine = sorted(e["version"] for e in applied if e["version"] >= versions[0]) if versions else []
        resyncs = log_events(dp.log_path, "config_agent.watchdog_resync", offsets[dp.name])
        rejected = log_events(dp.log_path, "config_agent.rejected", offsets[dp.name])
        if mine != versions or resyncs or rejected:
            print(
                f"\n  !! {dp.name}: applied {len(mine)} of {len(versions)} published versions "
                f"({len(set(mine))} distinct), {len(resyncs)} watchdog resyncs, {len(rejected)} rejected",
                end="",
            )


async def _cpu_during(pids: dict[str, int], work: Awaitable[Any]) -> tuple[dict[str, float], float]:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    await work
    wall = time.monotonic() - started
    return {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}, wall


# -- the run ----------------------------------------------------------------------------------------


async def timed(what: str, work: Awaitable[Any]) -> Any:
    started = time.monotonic()
    print(f"... {what}", end="", flush=True)
    result = await work
    print(f" ({time.monotonic() - started:.1f} s, load {os.getloadavg()[0]:.1f})", flush=True)
    return result


async def run(stack: Stack, args: argparse.Namespace) -> None:
    bench = Bench(stack, args)
    try:
        await bench.start()
        await _run(bench, stack, args)
    finally:
        await bench.close()


async def _run(bench: Bench, stack: Stack, args: argparse.Namespace) -> None:
    prop_rows: list[list[Any]] = []
    size_rows: list[list[Any]] = []
    try:
        await _scenarios(bench, stack, args, prop_rows, size_rows)
    finally:  # what was measured, even when a later scenario failed
        if prop_rows:
            _print_propagation(prop_rows, args)
        if size_rows:
            _print_sizes(size_rows, args)


async def _scenarios(
    bench: Bench,
    stack: Stack,
    args: argparse.Namespace,
    prop_rows: list[list[Any]],
    size_rows: list[list[Any]],
) -> None:
    assert bench.cp is not None
    small, mid, big = args.small_routes, args.routes, args.big_routes
    cost_rows: list[list[Any]] = []

    # ---- small config: the NATS floor and the CP's cost with 1, 10, 100 subscribers ----
    await timed(f"POST /config with {small} routes", bench.post_config(small))
    for total in (int(n) for n in args.subscribers.split(",")):
        nodes = await timed(f"subscribers up to {total}", bench.start_subscribers(total))
        bench.floor[total] = await bench.ping_floor(total)
        cost_rows.append(await timed(f"CP CPU, {total} subscribers", bench.cp_cost(nodes)))
    await bench.stop_subscribers()
    _print_cost(cost_rows, args)

    # ---- small config: propagation with 1 DP (acks, then /status polling) and 10 DPs ----
    dps: list[Process] = await timed("starting 1 data plane", asyncio.to_thread(stack.add_dps, 1))
    await bench.wait_applied(dps)
    prop_rows.append(await timed(f"propagation, {small} routes, 1 DP", bench.propagation(small, dps)))
    prop_rows.append(
        await timed("  the same, /status polled", bench.propagation(small, dps, poll=args.poll_interval))
    )
    more = args.dps - 1
    dps += await timed(f"starting {more} more data planes", asyncio.to_thread(stack.add_dps, more))
    await bench.wait_applied(dps)
    prop_rows.append(
        await timed(f"propagation, {small} routes, {len(dps)} DPs", bench.propagation(small, dps))
    )

    # ---- 10,000 routes: every DP gets the config, then changes with 10 DPs and with 1 ----
    offsets = {node.name: node.log_size() for node in [bench.cp, *dps]}
    post_s, at_201 = await timed(f"POST /config with {mid} routes", bench.post_config(mid))
    served = await timed(f"{len(dps)} DPs applying it", bench.wait_applied(dps))
    size_rows.append(
        _size_row(mid, "import", bench, dps, offsets, post_s, post_s + max(served.values()) - at_201)
    )
    prop_rows.append(await timed(f"propagation, {mid} routes, {len(dps)} DPs", bench.propagation(mid, dps)))
    for dp in dps[1:]:
        await asyncio.to_thread(dp.stop)
    dps = dps[:1]
    offsets = {node.name: node.log_size() for node in [bench.cp, *dps]}
    prop_rows.append(await timed(f"propagation, {mid} routes, 1 DP", bench.propagation(mid, dps)))
    size_rows.append(_size_row(mid, "change", bench, dps, offsets, float("nan"), float("nan")))

    # ---- 100,000 routes, 1 DP ----
    if big:
        offsets = {node.name: node.log_size() for node in [bench.cp, *dps]}
        post_s, at_201 = await timed(f"POST /config with {big} routes", bench.post_config(big))
        served = await timed("1 DP applying it", bench.wait_applied(dps))
        code = await bench.proxied_status(dps[0], f"/v1/svc-{big // ROUTES_PER_SERVICE - 1}/r0")
        assert code != 404, "the last route of the big config is not routed"
        size_rows.append(
            _size_row(big, "import", bench, dps, offsets, post_s, post_s + max(served.values()) - at_201)
        )
        offsets = {node.name: node.log_size() for node in [bench.cp, *dps]}
        prop_rows.append(
            await timed(
                f"propagation, {big} routes, 1 DP", bench.propagation(big, dps, changes=args.big_changes)
            )
        )
        size_rows.append(_size_row(big, "change", bench, dps, offsets, float("nan"), float("nan")))
        memory = (await bench.get_json(f"{dps[0].url('status')}/status"))["memory"]
        print(f"DP memory with {big} routes: {memory['workers_rss_kib'] / 1024:.0f} MiB RSS")


def _size_row(
    routes: int,
    what: str,
    bench: Bench,
    dps: Sequence[Process],
    offsets: dict[str, int],
    post_seconds: float,
    served_seconds: float,
) -> list[Any]:
    assert bench.cp is not None
    published = log_events(bench.cp.log_path, "publisher.published", offsets[bench.cp.name])
    applied = [e for dp in dps for e in log_events(dp.log_path, "config_agent.applied", offsets[dp.name])]
    payload = median([e["payload_bytes"] for e in published])
    raw = median([e["raw_bytes"] for e in published])
    return [
        routes,
        f"{what}, {len(dps)} DP{'s' if len(dps) > 1 else ''}",
        len(published),
        payload / 1024,
        raw / 1024,
        raw / payload,
        "yes" if any(e["object_store"] for e in published) else "no",
        median([e["build_ms"] for e in published]),
        median([e["total_ms"] for e in published]),
        median([e["decode_ms"] for e in applied]),
        median([e["apply_ms"] for e in applied]),
        post_seconds,
        served_seconds,
    ]


def _print_cost(rows: list[list[Any]], args: argparse.Namespace) -> None:
    table(
        f"CP CPU per change, {args.small_routes} routes (subscribers: heartbeat, read_latest on each "
        "announcement, ack)",
        [
            "subscribers",
            "changes",
            "CP ms/change",
            "CP idle ms/s",
            "CP net ms/change",
            "nats-server ms/change",
            "nats net ms/change",
            "floor: NATS fan-out p50 ms",
        ],
        rows,
        [
            "CPU: utime+stime from /proc over the changes, divided by their number; net: minus the idle rate "
            "x the same wall time.",
            "A change: PATCH on the Admin API, store write, export, encode, publish, announce, then N acks "
            "in (and their flush to PostgreSQL).",
            "Floor (baseline): one plain NATS message to N subscriber processes and all their replies, same "
            "server. /proc CPU ticks are 10 ms.",
        ],
    )


def _print_propagation(rows: list[list[Any]], args: argparse.Namespace) -> None:
    table(
        "Propagation: Admin API answer -> every DP serving the change (ms)",
        [
            "routes",
            "DPs",
            "timed by",
            "changes",
            "p50",
            "p99",
            "max",
            "each DP p50",
            "published",
            "CP export",
            "CP build",
            "CP publish",
            "DP decode",
            "DP apply",
            "floor p50",
            "x floor",
        ],
        rows,
        [
            "p50/p99/max: time until the LAST data plane served each change; each DP p50: over every "
            "(change, DP) pair. Medians:",
            "CP export (store.exported) is part of CP build, which is part of CP publish "
            "(publisher.published); DP decode, apply: config_agent.applied.",
            f"Floor: plain NATS to N subscriber processes and back, same server. Changes spaced by "
            f"{args.gap * 1000:.0f} ms; cluster_publish_interval {args.publish_interval} s.",
            "Goal (issue 5): p99 < 250 ms at 10,000 routes with 10 DPs.",
        ],
    )


def _print_sizes(rows: list[list[Any]], args: argparse.Namespace) -> None:
    del args
    table(
        "Snapshot size and DP apply time (medians from publisher.published and config_agent.applied)",
        [
            "routes",
            "snapshot of",
            "snapshots",
            "payload KiB",
            "raw KiB",
            "ratio",
            "object store",
            "CP build ms",
            "CP publish ms",
            "DP decode ms",
            "DP apply ms",
            "POST->201 s",
            "POST->all serving s",
        ],
        rows,
        [
            "import: the POST /config that brought the config (with 10 DPs: all decoding it at once on the "
            "shared cores); change: the single changes above."
        ],
    )


# -- 4. the pure-CPU floor of one change ------------------------------------------------------------


def codec_rows(routes: Sequence[int]) -> list[list[Any]]:
    """Each step a change costs, once, in this process: what CP and DP repeat for every change."""
    steps: list[tuple[str, str]] = [
        ("CP", "consistency.delta_problems (what 1 changed service touches)"),
        ("CP", "encode_config, every entity (canonical bytes + sub-hashes)"),
        ("CP", "encode_config, entity cache + the change, 1 service changed"),
        ("CP", "zstd compress (level 3)"),
        ("DP", "zstd decompress"),
        ("DP", "msgspec.json.decode"),
        ("DP", "Config.build"),
        ("DP", "consistency.problems (references)"),
        ("DP", "LMDB cache write (the payload as received)"),
        ("DP", "build_runtime, routes changed (router, plans; GC paused)"),
        ("DP delta", "config_delta.apply + delta_problems (1 service changed)"),
        ("DP delta", "LMDB append of the delta"),
        ("DP delta", "build_runtime with the change (GC paused)"),
    ]
    results = {count: _codec_times(count) for count in routes}
    rows: list[list[Any]] = []
    for side in ("CP", "DP", "DP delta"):
        mine = [index for index, (owner, _) in enumerate(steps) if owner == side]
        rows += [[side, steps[index][1], *(results[count][index] for count in routes)] for index in mine]
        total = [sum(results[count][index] for index in mine) for count in routes]
        if side == "CP":  # it pays one of the two encodings
            total = [value - results[count][1] for value, count in zip(total, routes, strict=True)]
        rows.append([side, "sum (no I/O: the CP's revisions read, the DP's bus reads not counted)", *total])
    return rows


def _codec_times(count: int) -> list[float]:
    """ms of each step of ``codec_rows``, in its order, on a config of ``count`` routes."""
    config = declarative.load(build_document(count, "http://127.0.0.1:9"))
    changed = declarative.load(build_document(count, "http://127.0.0.1:10"))  # a service changed
    previous = build_runtime(config)
    changed_hash = config_hash(changed)  # the DP takes it from the signed header
    raw, _hashes = encode_config(config)
    payload = zstandard.ZstdCompressor(level=3).compress(raw)
    document = msgspec.json.decode(raw)
    # As the publisher's tracker hands them over: every entity the same object but the changed one.
    entity_cache = EncodingCache()
    encode_config(config, entity_cache)
    # As the tracker hands it over: the services kind a new tuple with one new entity, every
    # other kind (and entity) the very same objects.
    first = config.of("services")[0]
    new_service = {**first, "retries": first["retries"] + 1}
    one_changed = Config(
        {
            **config.entities,
            "services": tuple(
                new_service if e["id"] == new_service["id"] else e for e in config.of("services")
            ),
        }
    )

    one_delta = config_delta.diff(config, one_changed)
    one_change = config_delta.Change(config, one_delta)

    def cached_encode() -> object:
        encode_config(config, entity_cache)  # back to the primed state, not timed apart
        started = time.perf_counter()
        encode_config(one_changed, entity_cache, one_change)
        return time.perf_counter() - started

    # A data plane applying a delta: the config it serves keeps every unchanged object.
    delta_payload = zstandard.ZstdCompressor(level=3).compress(msgspec.json.encode(one_delta.document()))
    previous_shared = build_runtime(config)
    one_hash = config_hash(one_changed)
    cache_dir = Path(tempfile.mkdtemp(prefix="zonegate-bench-lmdb-"))
    cache = ConfigCache(cache_dir / "cache")
    work: list[Callable[[], object]] = [
        lambda: consistency.delta_problems(one_changed, config_delta.diff(config, one_changed)),
        lambda: encode_config(config),
        cached_encode,
        lambda: zstandard.ZstdCompressor(level=3).compress(raw),
        lambda: zstandard.ZstdDecompressor().decompress(payload, max_output_size=len(raw)),
        lambda: msgspec.json.decode(raw),
        lambda: Config.build(document),
        lambda: consistency.problems(config),
        lambda: cache.write_compressed(payload, "0" * 32, 1),
        lambda: without_gc(build_runtime, changed, previous, known_hash=changed_hash),
        lambda: consistency.delta_problems(config_delta.apply(config, one_delta), one_delta),
        lambda: cache.append_delta(delta_payload, "0" * 32, 2),
        lambda: without_gc(
            build_runtime, one_changed, previous_shared, known_hash=one_hash, change=one_change
        ),
    ]
    try:
        return [_best(fn, 3 if count <= 10_000 else 1) for fn in work]
    finally:
        cache.close()
        shutil.rmtree(cache_dir, ignore_errors=True)


def _best(fn: Callable[[], object], repeats: int) -> float:
    """Best of ``repeats``; a step that times itself returns its own seconds."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        own = fn()
        took = own if isinstance(own, float) else time.perf_counter() - started
        best = min(best, took)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50, help="most changes per propagation scenario")
    parser.add_argument("--budget", type=float, default=60, help="most seconds per propagation scenario")
    parser.add_argument("--cost-changes", type=int, default=30, help="changes per CP-cost row")
    parser.add_argument("--subscribers", default="1,10,100", help="subscriber counts for the CP cost")
    parser.add_argument("--dps", type=int, default=10, help="data planes in the many-DP scenarios")
    parser.add_argument("--small-routes", type=int, default=100)
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--big-routes", type=int, default=100_000, help="0 to skip")
    parser.add_argument("--big-changes", type=int, default=3)
    parser.add_argument("--poll-interval", type=float, default=0.005)
    parser.add_argument("--publish-interval", type=float, default=0.1)
    parser.add_argument("--gap", type=float, default=None, help="seconds between changes")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measured per row")
    args = parser.parse_args()
    logging.getLogger("asyncio").setLevel(logging.ERROR)  # nats-py's TLS close chatter
    if args.gap is None:
        args.gap = args.publish_interval + 0.05
    print(
        f"hybrid bench: {os.cpu_count()} CPUs, shared with whatever else runs (nothing pinned); "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    started = time.monotonic()
    # A SIGTERM (timeout, kill) unwinds like Ctrl-C, so the stack below stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with Stack() as stack:
        print(f"nats-server {stack.nats.url} (mTLS, JetStream); PostgreSQL (pgserver, fsync off)")
        asyncio.run(run(stack, args))
    sizes = [args.routes, *([args.big_routes] if args.big_routes else [])]
    print(f"\n... codec steps at {sizes} routes, in this process (best of 3, of 1 above 10,000)", flush=True)
    table(
        "Where a change's time goes: each step once, in this process, no Zonegate process running (ms)",
        ["side", "step", *(f"{n} routes" for n in sizes)],
        codec_rows(sizes),
        [
            "DP: a full snapshot (a new data plane, or one whose config is not the delta's base); "
            "DP delta: what a data plane serving the base pays."
        ],
    )
    print(f"\ntotal {time.monotonic() - started:.0f} s, load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
