"""How long the control plane's store takes to load and to read back a whole config.

``replace_all`` backs ``POST /config`` and ``config db-import``; ``export`` runs before every
snapshot the CP publishes. Both move every entity, so they bound how big a config can get before
a change stops feeling instant. Baseline, measured in the same run on the same server: a plain
binary COPY of the very same rows into scratch tables without constraints or indexes, which no
loader with foreign keys, unique indexes and a revision log can beat.

Run: ``.venv/bin/python ops/bench/store_bench.py [--entities 100000] [--dsn postgresql://...]``
Without ``--dsn`` it starts an embedded PostgreSQL (pgserver) in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from zonegate.control_plane import migrations, postgres
from zonegate.control_plane.store import Store
from zonegate.control_plane.tables import TABLES
from zonegate.core import canonical, declarative
from zonegate.core.config import Config
from zonegate.core.entities import KINDS
from zonegate.embedded.postgres import EmbeddedPostgres, create_database

T = TypeVar("T")

ENTITIES_PER_UNIT = 5.5  # a service, two routes, a consumer and its key, a plugin on every other service


def build_document(entities: int) -> dict[str, Any]:
    """About ``entities`` entities: services with two routes, consumers with a key, some plugins."""
    services = []
    consumers = []
    for index in range(round(entities / ENTITIES_PER_UNIT)):
        service: dict[str, Any] = {
            "name": f"svc-{index}",
            "url": f"http://backend-{index % 50}.internal:8080/api/{index}",
            "tags": ["bench", f"team-{index % 20}"],
            "routes": [
                {"name": f"r-{index}-a", "paths": [f"/v1/svc-{index}"], "methods": ["GET", "POST"]},
                {"name": f"r-{index}-b", "hosts": [f"svc-{index}.example.com"], "paths": ["/"]},
            ],
        }
        if index % 2 == 0:
            service["plugins"] = [{"name": "rate-limiting", "config": {"minute": 100, "policy": "local"}}]
        services.append(service)
        consumers.append({"username": f"user-{index}", "keyauth_credentials": [{"key": f"key-{index}"}]})
    return {"_format_version": "3.0", "services": services, "consumers": consumers}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float, str]] = []

    async def measure(self, name: str, fn: Callable[[], Awaitable[T]], note: str = "") -> T:
        started = time.perf_counter()
        result = await fn()
        self.rows.append((name, time.perf_counter() - started, peak_rss_mb(), note))
        return result

    def print(self, entities: int, baseline: str) -> None:
        base = next(seconds for name, seconds, _, _ in self.rows if name == baseline)
        header = f"{'phase':<34} {'seconds':>8} {'x COPY':>7} {'k ent/s':>8} {'peak RSS MB':>12}  note"
        print(header)
        print("-" * len(header))
        for name, seconds, rss, note in self.rows:
            print(
                f"{name:<34} {seconds:>8.2f} {seconds / base:>7.1f} {entities / seconds / 1000:>8.1f} "
                f"{rss:>12.0f}  {note}"
            )


async def copy_baseline(dsn: str, config: Config) -> None:
    """The same column tuples replace_all writes, COPYed into bare tables: the floor."""
    conn = await postgres.connect(dsn, connect_timeout=30, command_timeout=600)
    try:
        now = dt.datetime.now(dt.UTC)
        async with conn.transaction():
            for kind in KINDS:
                await conn.execute(f'CREATE TEMP TABLE "bench_{kind}" (LIKE "{kind}") ON COMMIT DROP')
            for kind in KINDS:
                entities = config.of(kind)
                if entities:
                    table = TABLES[kind]
                    records = (table.record(e, now, now) for e in entities)
                    await conn.copy_records(f"bench_{kind}", table.columns, records)
    finally:
        await conn.close()


async def bench(dsn: str, entities: int) -> None:
    conn = await postgres.connect(dsn, connect_timeout=30)
    try:
        if (await migrations.schema_state(conn)).needs_bootstrap:
            await migrations.bootstrap(conn, lock_timeout=30)
    finally:
        await conn.close()

    report = Report()
    document = build_document(entities)

    async def validate() -> Config:
        return declarative.load(document)

    config = await report.measure("declarative.load (validation)", validate, "the caller's share")
    total = sum(config.counts().values())
    await report.measure("baseline: binary COPY, bare tables", lambda: copy_baseline(dsn, config))
    async with Store.connect(dsn, timeout=30) as store:
        await report.measure("replace_all into an empty database", lambda: store.replace_all(config))
        await report.measure(
            "replace_all over the same 100%", lambda: store.replace_all(config), "delete + load"
        )
        exported = await report.measure("export (REPEATABLE READ)", store.export)
        await report.measure("export again (warm)", store.export)

    async def hash_export() -> str:
        return canonical.config_hash(exported).config_hash

    await report.measure("config_hash of the export", hash_export, "what a publisher does next")
    print(f"\n{total} entities: " + ", ".join(f"{k} {n}" for k, n in config.counts().items() if n))
    print(f"export == replace_all input (timestamps aside): {_same_content(config, exported)}\n")
    report.print(total, "baseline: binary COPY, bare tables")


def _same_content(loaded: Config, exported: Config) -> bool:
    stripped = Config.build(
        {
            kind: [
                {k: v for k, v in e.items() if k not in ("created_at", "updated_at")}
                for e in exported.of(kind)
            ]
            for kind in KINDS
        }
    )
    return stripped == loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--dsn", default=os.environ.get("ZONEGATE_BENCH_PG_DSN"), help="an empty database")
    args = parser.parse_args()
    if args.dsn:
        asyncio.run(bench(args.dsn, args.entities))
        return
    base = Path(tempfile.mkdtemp(prefix="zonegate-bench-pg-"))
    os.chmod(base, 0o711)  # as root, postgres runs as another user who must traverse it
    server = EmbeddedPostgres(base / "data", fsync=False)
    try:
        server.start()
        dsn = create_database(server.dsn, "store_bench")
        print(f"embedded PostgreSQL at {server.dsn} (fsync off)")
        asyncio.run(bench(dsn, args.entities))
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
