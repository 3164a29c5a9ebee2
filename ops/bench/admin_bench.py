"""What the Admin API and ``config db-import``/``db-export`` cost with 100k entities (issue 4, Measure).

Everything is real: an embedded PostgreSQL (pgserver, fsync off, as in ``store_bench.py``) or
``--dsn``, ``zonegate migrations bootstrap``, ``zonegate config db-import|db-export`` as child
processes, and ``zonegate start`` answering HTTP on a free port, in each role that writes to
PostgreSQL: ``control_plane`` (Admin API and the hybrid half; no NATS is there, so it never
publishes) and ``traditional`` (Admin API and a proxy that re-reads and applies the whole config
after each write). Three tables, each against floors measured in the same run:

1. Creates with 100k routes present, one request at a time on a keep-alive connection:
   ``POST /services/{name}/routes`` and ``POST /services``. Floors: ``GET /endpoints`` (aiohttp and
   our middlewares, no database), ``GET /status`` (the same plus one SELECT, its hash cached), the
   same INSERT sent alone with asyncpg (the database floor), and ``Store.insert`` in this process
   (the store's transaction: version bump, INSERT, revision row, NOTIFY; no HTTP). The kinds of
   write are interleaved so that noise from neighbours lands on all of them alike.
2. Listing every route with ``GET /routes?size=1000``, following ``next``: total and per page.
   Floors: ``Store.page`` in this process, and the same keyset SELECT sent with asyncpg.
3. db-import and db-export of a 100k-entity file (10k services, 40k routes, 20k consumers, 20k
   key-auth credentials, 10k plugins): wall time, CPU time and the child's peak RSS. Floors:
   binary COPY of the same rows into bare tables (``store_bench``'s), binary COPY out of the
   loaded tables, parsing the file, emitting YAML with PyYAML's C dumper, and ``zonegate version``
   (interpreter and CLI start-up); in-process parts show where the time goes.

Run: ``.venv/bin/python ops/bench/admin_bench.py [--entities 100000] [--routes 100000]
[--creates 500] [--roles control_plane,traditional] [--dsn postgresql://...]``. ``--dsn`` names a
database the bench may overwrite; without it an embedded PostgreSQL runs in a temporary directory.
About 6 minutes on 2 quiet cores.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
import asyncpg
import structlog
import yaml
from store_bench import copy_baseline

from zonegate.bus.certificates import generate_cluster_certificate
from zonegate.control_plane import migrations, postgres
from zonegate.control_plane.exported import export_hash
from zonegate.control_plane.store import Store
from zonegate.control_plane.tables import TABLES
from zonegate.core import declarative
from zonegate.core.entities import KINDS, schema_for
from zonegate.embedded.ports import free_port
from zonegate.embedded.postgres import EmbeddedPostgres, create_database

try:
    from yaml import CSafeDumper as FastDumper
    from yaml import CSafeLoader as FastLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeDumper as FastDumper  # type: ignore[assignment]
    from yaml import SafeLoader as FastLoader  # type: ignore[assignment]

T = TypeVar("T")

ZONEGATE = Path(sys.executable).with_name("zonegate")
IMPORT_GOAL_S = 30.0  # issue 4
EXPORT_GOAL_S = 10.0
PAGE_SIZE = 1000  # Kong's maximum
ROUTES_PER_SERVICE = 100


# -- documents -----------------------------------------------------------------------------------------


def mixed_document(entities: int) -> dict[str, Any]:
    """Issue 4's mix: per 10 entities a service, 4 routes, 2 consumers with a key each, a plugin.

    Plugins: key-auth on every other service, rate-limiting on the first route of 3 services in
    10 and on 1 consumer in 10. Nested, as people write files; db-export writes them flat.
    """
    units = entities // 10
    rate_limit = {"name": "rate-limiting", "config": {"minute": 100, "policy": "local"}}
    services = []
    for i in range(units):
        routes: list[dict[str, Any]] = [
            {
                "name": f"r-{i}-{j}",
                "paths": [f"/v1/svc-{i}/{j}"],
                "methods": ["GET", "POST"],
                "hosts": [f"svc-{i}.example.com"],
                "tags": ["bench"],
            }
            for j in range(4)
        ]
        if i % 10 in (1, 3, 5):
            routes[0]["plugins"] = [rate_limit]
        service: dict[str, Any] = {
            "name": f"svc-{i}",
            "url": f"http://backend-{i % 50}.internal:8080/api/{i}",
            "tags": ["bench", f"team-{i % 20}"],
            "routes": routes,
        }
        if i % 2 == 0:
            service["plugins"] = [{"name": "key-auth", "config": {"key_names": ["apikey"]}}]
        services.append(service)
    consumers = []
    for k in range(2 * units):
        consumer: dict[str, Any] = {
            "username": f"user-{k}",
            "custom_id": f"customer-{k}",
            "keyauth_credentials": [{"key": f"key-{k}-{uuid.UUID(int=k).hex}"}],
        }
        if k % 10 == 0:
            consumer["plugins"] = [rate_limit]
        consumers.append(consumer)
    return {"_format_version": "3.0", "services": services, "consumers": consumers}


def routes_document(routes: int) -> dict[str, Any]:
    """``routes`` routes, 100 under each service: the Admin API's working set."""
    return {
        "_format_version": "3.0",
        "services": [
            {
                "name": f"svc-{i}",
                "url": f"http://backend-{i}.internal:8080",
                "routes": [
                    {"name": f"r-{i}-{j}", "paths": [f"/svc-{i}/{j}"], "methods": ["GET"]}
                    for j in range(ROUTES_PER_SERVICE)
                ],
            }
            for i in range(routes // ROUTES_PER_SERVICE)
        ],
    }


def write_yaml(path: Path, document: Mapping[str, Any]) -> None:
    path.write_text(yaml.dump(dict(document), Dumper=FastDumper, sort_keys=False), encoding="utf-8")


# -- measuring ----------------------------------------------------------------------------------------


def clean_environment(dsn: str, prefix: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZONEGATE_")}
    env.update({"ZONEGATE_PG_DSN": dsn, "ZONEGATE_PREFIX": str(prefix), "ZONEGATE_DATABASE": "postgres"})
    return env


# The measured commands run under a small launcher. ru_maxrss counts what a child held before exec,
# and a child of this process (forked or vforked) holds this process's pages, hundreds of MB by
# the time the files are loaded: the launcher is a fresh interpreter, about 10 MB, so its child's
# figure is the command's own. It reports wall time, CPU time and peak RSS of that one child.
_LAUNCHER: Final = """
import json, os, subprocess, sys, time
started = time.perf_counter()
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"wall": time.perf_counter() - started, "cpu": usage.ru_utime + usage.ru_stime,
               "maxrss_kb": usage.ru_maxrss}, out)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass(frozen=True)
class Bulk:
    """One bulk phase: wall and CPU seconds (of this process, or of the child; never PostgreSQL's)."""

    name: str
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float | None = None
    note: str = ""


def run_child(env: Mapping[str, str], name: str, *args: str, note: str = "") -> Bulk:
    """``zonegate ARGS`` to completion, measured by the launcher."""
    with tempfile.TemporaryFile() as output, tempfile.NamedTemporaryFile("r", suffix=".json") as usage:
        status = subprocess.call(
            [sys.executable, "-c", _LAUNCHER, usage.name, str(ZONEGATE), *args],
            env=dict(env),
            stdout=output,
            stderr=output,
        )
        output.seek(0)
        text = output.read().decode(errors="replace")
        if status != 0:
            raise SystemExit(f"zonegate {' '.join(args)} failed ({status}):\n{text}")
        measured = json.load(usage)
    return Bulk(name, measured["wall"], measured["cpu"], measured["maxrss_kb"] / 1024, note)


def measure(name: str, action: Callable[[], T], note: str = "in this process") -> tuple[T, Bulk]:
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    result = action()
    return result, Bulk(name, time.perf_counter() - started, time.process_time() - cpu, note=note)


async def measure_async(name: str, pending: Awaitable[T], note: str = "in this process") -> tuple[T, Bulk]:
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    result = await pending
    return result, Bulk(name, time.perf_counter() - started, time.process_time() - cpu, note=note)


@dataclass
class Latency:
    name: str
    note: str = ""
    samples: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    async def time(self, pending: Awaitable[T]) -> T:
        """Await ``pending`` (a coroutine does nothing until awaited) and keep how long it took."""
        started = time.perf_counter()
        result = await pending
        self.samples.append(time.perf_counter() - started)
        return result


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def load_average() -> str:
    return f"load average {os.getloadavg()[0]:.2f}"


def print_latencies(title: str, rows: list[Latency], floor: str) -> None:
    base = next(row for row in rows if row.name == floor).percentile(0.5)
    header = f"{'request':<52} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p50 x':>7}  note"
    print(f"\n{title} (p50 x: against '{floor}')")
    print(header)
    print("-" * len(header))
    for row in rows:
        p50 = row.percentile(0.5)
        print(
            f"{row.name:<52} {len(row.samples):>5} {ms(p50):>8} {ms(row.percentile(0.99)):>8} "
            f"{ms(max(row.samples)):>8} {p50 / base:>7.1f}  {row.note}"
        )


def print_bulk(title: str, rows: list[Bulk], floor: str) -> None:
    base = next(row for row in rows if row.name == floor).seconds
    header = f"{'phase':<56} {'wall s':>7} {'cpu s':>7} {'x floor':>8} {'peak RSS MB':>12}  note"
    print(f"\n{title} (x floor: wall time against '{floor}')")
    print(header)
    print("-" * len(header))
    for row in rows:
        rss = f"{row.peak_rss_mb:.0f}" if row.peak_rss_mb is not None else "-"
        print(
            f"{row.name:<56} {row.seconds:>7.2f} {row.cpu_seconds:>7.2f} {row.seconds / base:>8.1f} "
            f"{rss:>12}  {row.note}"
        )


# -- part 3: db-import and db-export ----------------------------------------------------------------------

IMPORT_ROW: Final = "zonegate config db-import, empty database"
EXPORT_ROW: Final = "zonegate config db-export"


async def copy_out(dsn: str) -> int:
    """Every entity table as binary COPY, in one snapshot, bytes thrown away: the read floor."""
    received = 0

    async def sink(chunk: bytes) -> None:
        nonlocal received
        received += len(chunk)

    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            for kind in KINDS:
                await conn.copy_from_table(kind, output=sink, format="binary")
    finally:
        await conn.close()
    return received


async def import_export(
    dsn: str, env: Mapping[str, str], work: Path, entities: int
) -> tuple[list[Bulk], list[Bulk], str]:
    document = mixed_document(entities)
    source, as_json, exported = work / "mixed.yml", work / "mixed.json", work / "exported.yml"
    write_yaml(source, document)
    as_json.write_text(json.dumps(document), encoding="utf-8")
    del document
    started_at = load_average()
    text, json_text = source.read_text(encoding="utf-8"), as_json.read_text(encoding="utf-8")

    startup = run_child(env, "floor: zonegate version (interpreter + CLI start)", "version")
    imports = [startup]
    parsed, row = measure(
        "floor: parse the file, PyYAML C loader", partial(yaml.load, text, Loader=FastLoader)
    )
    imports.append(row)
    imports.append(
        measure("floor: json.loads of the same document as JSON", partial(json.loads, json_text))[1]
    )
    del text, json_text
    config, row = measure(
        "part: declarative.load (validation) of the parsed file", partial(declarative.load, parsed)
    )
    imports.append(row)
    del parsed
    counts = ", ".join(f"{kind} {n}" for kind, n in config.counts().items() if n)
    total = sum(config.counts().values())
    _, row = await measure_async(
        "floor: binary COPY of the same rows, bare tables", copy_baseline(dsn, config)
    )
    imports.insert(0, Bulk(row.name, row.seconds, row.cpu_seconds, note="store_bench's baseline"))
    del config
    imports.append(
        run_child(env, IMPORT_ROW, "config", "db-import", str(source), note=f"goal < {IMPORT_GOAL_S:.0f} s")
    )
    imports.append(
        run_child(
            env,
            "zonegate config db-import over the same config",
            "config",
            "db-import",
            str(source),
            note="delete + load",
        )
    )

    copied, row = await measure_async("floor: binary COPY out of every table", copy_out(dsn))
    exports = [Bulk(row.name, row.seconds, row.cpu_seconds, note=f"{copied / 1e6:.0f} MB, bytes dropped")]
    async with Store.connect(dsn, timeout=30) as store:
        snapshot, snapshot_row = await measure_async(
            "part: Store.snapshot (read, decode, Config.build)", store.snapshot()
        )
    document = declarative.to_document(snapshot.config)
    exports.append(
        measure(
            "floor: YAML of the export, PyYAML C dumper",
            partial(yaml.dump, document, Dumper=FastDumper, sort_keys=False),
        )[1]
    )
    del document
    exports.append(startup)
    exports.append(snapshot_row)
    dumped, row = measure(
        "part: declarative.dumps (block YAML writer)", partial(declarative.dumps, snapshot.config)
    )
    exports.append(Bulk(row.name, row.seconds, row.cpu_seconds, note=f"{len(dumped) / 1e6:.0f} MB of YAML"))
    del dumped
    exports.append(measure("part: export_hash", partial(export_hash, snapshot.config))[1])
    del snapshot
    exports.append(
        run_child(env, EXPORT_ROW, "config", "db-export", str(exported), note=f"goal < {EXPORT_GOAL_S:.0f} s")
    )
    exported_total = sum(declarative.loads(exported.read_text(encoding="utf-8")).counts().values())
    if exported_total != total:
        raise SystemExit(f"db-export wrote {exported_total} entities, expected {total}")
    summary = (
        f"db-import/db-export part: {started_at} at its start, {load_average()} at its end\n"
        f"mixed file: {total} entities ({counts}); {source.stat().st_size / 1e6:.0f} MB of YAML"
    )
    return imports, exports, summary


# -- parts 1 and 2: the Admin API ---------------------------------------------------------------------


ROLES: Final = {
    "control_plane": "Admin API + hybrid half; no NATS there, so it never publishes",
    "traditional": "Admin API + a proxy that re-reads and applies the config after every write",
}


def role_environment(role: str, work: Path) -> dict[str, str]:
    """What ``zonegate start`` needs beyond the database for ``role``, on ports of its own."""
    if role == "control_plane":
        certs = work / "certs"
        certs.mkdir(exist_ok=True)
        issued = generate_cluster_certificate()
        (certs / "cluster.crt").write_bytes(issued.cert_pem())
        (certs / "cluster.key").write_bytes(issued.key_pem())
        return {
            "ZONEGATE_CLUSTER_CERT": str(certs / "cluster.crt"),
            "ZONEGATE_CLUSTER_CERT_KEY": str(certs / "cluster.key"),
            "ZONEGATE_CLUSTER_NATS_URL": f"tls://127.0.0.1:{free_port()}",
        }
    return {  # workers: the default (one per CPU), as an operator would run it
        "ZONEGATE_PROXY_LISTEN": f"127.0.0.1:{free_port()}",
        "ZONEGATE_STATUS_LISTEN": f"127.0.0.1:{free_port()}",
    }


class ControlPlane:
    """``zonegate start`` on PostgreSQL with the Admin API on a free port; logs JSON to a file."""

    def __init__(self, env: Mapping[str, str], work: Path, role: str) -> None:
        self.role = role
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / f"{role}.log"
        self.env = {
            **env,
            **role_environment(role, work),
            "ZONEGATE_ROLE": role,
            "ZONEGATE_ADMIN_LISTEN": f"127.0.0.1:{self.port}",
            "ZONEGATE_LOG_FORMAT": "json",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(ZONEGATE), "start"], env=self.env, stdout=log, stderr=log, start_new_session=True
            )

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"zonegate start exited with {self.process.returncode}:\n{self.log()}")
            try:
                async with session.get(f"{self.url}/endpoints") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        raise SystemExit(f"the control plane did not come up:\n{self.log()}")

    def peak_rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def request(
    session: aiohttp.ClientSession, method: str, url: str, expect: int, body: Any = None
) -> bytes:
    async with session.request(method, url, json=body) as response:
        raw = await response.read()
    if response.status != expect:
        raise SystemExit(f"{method} {url}: {response.status}, expected {expect}: {raw[:500]!r}")
    return raw


def insert_sql(kind: str) -> str:
    columns = TABLES[kind].columns
    names = ", ".join(f'"{c}"' for c in columns)
    values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return f'INSERT INTO "{kind}" ({names}) VALUES ({values})'


def validated(kind: str, fields: dict[str, Any], with_id: bool = False) -> dict[str, Any]:
    entity = schema_for(kind).validate(fields)
    if with_id:
        entity["id"] = str(uuid.uuid4())
    return entity


async def creates(
    session: aiohttp.ClientSession, cp: ControlPlane, raw: postgres.Connection, store: Store, count: int
) -> list[Latency]:
    endpoints = Latency("floor: GET /endpoints", "framework, no database")
    status = Latency("floor: GET /status", "framework + SELECT version")
    raw_route = Latency("floor: asyncpg INSERT INTO routes", "one statement, autocommit")
    store_route = Latency("floor: Store.insert('routes') in process", "version, INSERT, revision, NOTIFY")
    http_route = Latency("POST /services/{name}/routes", "JSON body")
    raw_service = Latency("floor: asyncpg INSERT INTO services", "one statement, autocommit")
    store_service = Latency("floor: Store.insert('services') in process", "version, INSERT, revision, NOTIFY")
    http_service = Latency("POST /services", "JSON body")
    status_after_write = Latency("GET /status after a write", "re-exports everything to hash it")

    tag = cp.role.replace("_", "-")
    # Reads first: a write moves the version, and the next /status then hashes a fresh export.
    for _ in range(count):
        await endpoints.time(request(session, "GET", f"{cp.url}/endpoints", 200))
    for _ in range(count):
        await status.time(request(session, "GET", f"{cp.url}/status", 200))

    services = await raw.fetch("SELECT name, id::text FROM services WHERE name LIKE 'svc-%'")
    service_ids = {row[0]: row[1] for row in services}
    names = sorted(service_ids)
    route_sql, service_sql = insert_sql("routes"), insert_sql("services")
    routes_table, services_table = TABLES["routes"], TABLES["services"]
    now = dt.datetime.now(dt.UTC)
    for i in range(count):
        target = names[i % len(names)]
        service_ref = {"id": service_ids[target]}

        route = validated(
            "routes", {"name": f"{tag}-raw-{i}", "paths": [f"/{tag}/raw/{i}"], "service": service_ref}, True
        )
        record = routes_table.record(route, now, now)
        await raw_route.time(raw.execute(route_sql, *record))
        route = validated(
            "routes", {"name": f"{tag}-store-{i}", "paths": [f"/{tag}/store/{i}"], "service": service_ref}
        )
        await store_route.time(store.insert("routes", route))
        body: dict[str, Any] = {
            "name": f"{tag}-admin-{i}",
            "paths": [f"/{tag}/admin/{i}"],
            "methods": ["GET"],
        }
        await http_route.time(request(session, "POST", f"{cp.url}/services/{target}/routes", 201, body))

        service = validated(
            "services", {"name": f"{tag}-raw-{i}", "url": f"http://raw-{i}.internal:8080"}, True
        )
        record = services_table.record(service, now, now)
        await raw_service.time(raw.execute(service_sql, *record))
        service = validated(
            "services", {"name": f"{tag}-store-{i}", "url": f"http://store-{i}.internal:8080"}
        )
        await store_service.time(store.insert("services", service))
        body = {"name": f"{tag}-admin-{i}", "url": f"http://admin-{i}.internal:8080"}
        await http_service.time(request(session, "POST", f"{cp.url}/services", 201, body))

    for i in range(5):
        body = {"name": f"{tag}-status-{i}", "url": f"http://status-{i}.internal:8080"}
        await request(session, "POST", f"{cp.url}/services", 201, body)
        await status_after_write.time(request(session, "GET", f"{cp.url}/status", 200))
    return [
        endpoints,
        status,
        raw_route,
        store_route,
        http_route,
        raw_service,
        store_service,
        http_service,
        status_after_write,
    ]


@dataclass
class Listing:
    name: str
    pages: Latency
    entities: int = 0

    @property
    def seconds(self) -> float:
        return sum(self.pages.samples)


async def listings(
    session: aiohttp.ClientSession, cp: ControlPlane, raw: postgres.Connection, store: Store
) -> list[Listing]:
    """The three walks in lockstep, a page of each in turn, so neighbours' noise hits all three."""
    admin = Listing("GET /routes?size=1000, following next", Latency("admin"))
    in_process = Listing("floor: Store.page('routes', 1000) in process", Latency("store"))
    floor = Listing("floor: asyncpg keyset SELECT ... LIMIT 1001", Latency("asyncpg"))
    columns = TABLES["routes"].select_list()
    first = f"SELECT {columns} FROM routes ORDER BY id LIMIT {PAGE_SIZE + 1}"
    after = f"SELECT {columns} FROM routes WHERE id > $1::uuid ORDER BY id LIMIT {PAGE_SIZE + 1}"

    link: str | None = f"/routes?size={PAGE_SIZE}"
    offset: str | None = None
    last: str | None = None
    while True:
        raw_body = await admin.pages.time(request(session, "GET", cp.url + str(link), 200))
        page = json.loads(raw_body)  # parsed outside the timing: the client's share
        admin.entities += len(page["data"])
        link = page["next"]

        found, offset = await in_process.pages.time(store.page("routes", PAGE_SIZE, offset))
        in_process.entities += len(found)

        rows = await floor.pages.time(raw.fetch(first) if last is None else raw.fetch(after, last))
        floor.entities += min(len(rows), PAGE_SIZE)
        last = str(rows[PAGE_SIZE - 1][0]) if len(rows) > PAGE_SIZE else None

        ended = (link is None, offset is None, last is None)
        if any(ended):
            if not all(ended):
                raise SystemExit(f"the walks disagree on where the routes end: {ended}")
            return [admin, in_process, floor]


def print_listings(rows: list[Listing]) -> None:
    base = rows[-1].seconds
    header = (
        f"{'listing all routes':<52} {'pages':>5} {'routes':>7} {'total s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'k/s':>6} {'x floor':>8}"
    )
    print(f"\nListing every route, {PAGE_SIZE} a page (x floor: against the asyncpg keyset SELECT)")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.name:<52} {len(row.pages.samples):>5} {row.entities:>7} {row.seconds:>8.2f} "
            f"{ms(row.pages.percentile(0.5)):>8} {ms(row.pages.percentile(0.99)):>8} "
            f"{row.entities / row.seconds / 1000:>6.1f} {row.seconds / base:>8.1f}"
        )


def load_routes(env: Mapping[str, str], work: Path, routes: int) -> Bulk:
    source = work / "routes.yml"
    write_yaml(source, routes_document(routes))
    return run_child(
        env,
        f"zonegate config db-import, {routes // ROUTES_PER_SERVICE} services + {routes} routes",
        "config",
        "db-import",
        str(source),
        note="the Admin API's working set",
    )


@dataclass(frozen=True)
class RoleResult:
    role: str
    latencies: list[Latency]
    listed: list[Listing]
    summary: str


async def admin_api(dsn: str, env: Mapping[str, str], work: Path, role: str, count: int) -> RoleResult:
    started_at = load_average()
    cp = ControlPlane(env, work, role)
    connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection: latency, not throughput
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        try:
            cp.spawn()
            await cp.wait_ready(session)
            first_status = time.perf_counter()
            await request(session, "GET", f"{cp.url}/status", 200)
            first_status = time.perf_counter() - first_status
            raw = await postgres.connect(dsn, connect_timeout=30, command_timeout=120)
            try:
                async with Store.connect(dsn, timeout=30) as store:
                    latencies = await creates(session, cp, raw, store, count)
                    listed = await listings(session, cp, raw, store)
            finally:
                await raw.close()
            summary = (
                f"role {role} ({ROLES[role]}): {started_at} at its start, {load_average()} at its end; "
                f"first GET /status (exports and hashes every entity) {first_status:.2f} s; "
                f"peak RSS of the main process {cp.peak_rss_mb():.0f} MB"
            )
        finally:
            cp.stop()
    errors = [line for line in cp.log().splitlines() if '"level": "error"' in line or "Traceback" in line]
    if errors:
        summary += f"\n{len(errors)} error lines in its log, first: {errors[0][:300]}"
    return RoleResult(role, latencies, listed, summary)


async def needs_bootstrap(dsn: str) -> bool:
    conn = await postgres.connect(dsn, connect_timeout=30)
    try:
        return (await migrations.schema_state(conn)).needs_bootstrap
    finally:
        await conn.close()


# -- main -------------------------------------------------------------------------------------------------


async def bench(dsn: str, entities: int, routes: int, count: int, roles: list[str]) -> None:
    started = time.monotonic()
    print(
        f"admin bench: {os.cpu_count()} CPUs shared with other people's work (nothing pinned; "
        f"bench client, control plane and PostgreSQL on the same cores), {load_average()}"
    )
    work = Path(tempfile.mkdtemp(prefix="zonegate-admin-bench-"))
    try:
        env = clean_environment(dsn, work / "prefix")
        if await needs_bootstrap(dsn):
            run_child(env, "bootstrap", "migrations", "bootstrap")
        imports, exports, files = await import_export(dsn, env, work, entities)
        route_import = load_routes(env, work, routes)
        results = [await admin_api(dsn, env, work, role, count) for role in roles]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{files}")
    for result in results:
        print(f"\n{result.summary}")
        floor = "floor: asyncpg INSERT INTO routes"
        title = f"Creates with {routes} routes present, one at a time, role {result.role}"
        print_latencies(title, result.latencies, floor)
        print_listings(result.listed)
    print_bulk(f"db-import of {entities} entities", [*imports, route_import], imports[0].name)
    print_bulk(f"db-export of {entities} entities", exports, exports[0].name)
    goals = [
        ("db-import", next(r for r in imports if r.name == IMPORT_ROW), IMPORT_GOAL_S),
        ("db-export", next(r for r in exports if r.name == EXPORT_ROW), EXPORT_GOAL_S),
    ]
    print()
    for name, row, goal in goals:
        verdict = "met" if row.seconds < goal else "NOT met"
        print(
            f"goal {name} < {goal:.0f} s: {row.seconds:.1f} s wall ({row.cpu_seconds:.1f} s CPU), {verdict}"
        )
    print(f"total {time.monotonic() - started:.0f} s, {load_average()} now")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000, help="size of the db-import/export file")
    parser.add_argument("--routes", type=int, default=100_000, help="routes present for the Admin API part")
    parser.add_argument("--creates", type=int, default=500, help="creates of each kind")
    parser.add_argument(
        "--dsn", default=os.environ.get("ZONEGATE_BENCH_PG_DSN"), help="a database the bench may overwrite"
    )
    parser.add_argument(
        "--roles", default=",".join(ROLES), help="zonegate start roles to measure, comma-separated"
    )
    args = parser.parse_args()
    roles = [role.strip() for role in args.roles.split(",") if role.strip()]
    unknown = set(roles) - set(ROLES)
    if unknown:
        parser.error(f"unknown roles: {', '.join(sorted(unknown))}")
    # The in-process floors use the store, which logs each write at debug: keep the tables readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.dsn:
        asyncio.run(bench(args.dsn, args.entities, args.routes, args.creates, roles))
        return
    base = Path(tempfile.mkdtemp(prefix="zonegate-bench-pg-"))
    os.chmod(base, 0o711)  # as root, postgres runs as another user who must traverse it
    server = EmbeddedPostgres(base / "data", fsync=False)
    try:
        server.start()
        dsn = create_database(server.dsn, "admin_bench")
        print(f"embedded PostgreSQL at {server.dsn} (fsync off)")
        asyncio.run(bench(dsn, args.entities, args.routes, args.creates, roles))
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
