"""How long reading, validating and hashing a declarative config takes as it grows.

The control plane builds a snapshot and every data plane validates one on each change, so
this cost bounds how fast a change can propagate. Kong's docs put 30k entities at about 30 MB
per push. Baseline, measured in the same run: parsing the same text with nothing else
(``json.loads``, and ``yaml.safe_load`` with PyYAML's C loader when present), which no
validating loader can beat.

Run: ``.venv/bin/python ops/bench/declarative_bench.py [--sizes 1000,10000,30000]``
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import yaml

from zonegate.core import canonical, declarative

try:
    from yaml import CSafeLoader as FastLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as FastLoader  # type: ignore[assignment]


def build_document(entities: int) -> dict[str, Any]:
    """About ``entities`` entities: services with two routes, a plugin on every fifth one, consumers."""
    services = []
    consumers = []
    per_service = 4  # the service, two routes, and on average most of a plugin or consumer
    for index in range(entities // per_service):
        service: dict[str, Any] = {
            "name": f"svc-{index}",
            "url": f"http://backend-{index % 50}.internal:8080/api/{index}",
            "routes": [
                {"name": f"r-{index}-a", "paths": [f"/v1/svc-{index}"], "methods": ["GET", "POST"]},
                {"name": f"r-{index}-b", "hosts": [f"svc-{index}.example.com"], "paths": ["/"]},
            ],
        }
        if index % 5 == 0:
            service["plugins"] = [{"name": "rate-limiting", "config": {"minute": 100, "policy": "local"}}]
        services.append(service)
        consumers.append({"username": f"user-{index}", "keyauth_credentials": [{"key": f"key-{index}"}]})
    return {"_format_version": "3.0", "services": services, "consumers": consumers}


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,30000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    header = (
        f"{'entities':>9} {'loaded':>7} {'json MB':>8} {'json.loads':>11} {'yaml C load':>12} "
        f"{'load(json)':>11} {'x json':>7} {'hash':>8} {'write':>8}"
    )
    print(header)
    print("-" * len(header))
    for size in (int(s) for s in args.sizes.split(",")):
        document = build_document(size)
        text_json = json.dumps(document)
        text_yaml = yaml.safe_dump(document)
        config = declarative.loads(text_json)
        loaded = sum(config.counts().values())
        t_json = best_of(args.repeats, partial(json.loads, text_json))
        t_yaml = best_of(args.repeats, partial(yaml.load, text_yaml, Loader=FastLoader))
        t_load = best_of(args.repeats, partial(declarative.loads, text_json))
        t_hash = best_of(args.repeats, partial(canonical.config_hash, config))
        t_write = best_of(args.repeats, partial(declarative.dumps, config, fmt="json"))
        print(
            f"{size:>9} {loaded:>7} {len(text_json) / 1e6:>8.2f} "
            f"{t_json * 1e3:>9.1f}ms {t_yaml * 1e3:>10.1f}ms {t_load * 1e3:>9.1f}ms "
            f"{t_load / t_json:>6.0f}x {t_hash * 1e3:>6.1f}ms {t_write * 1e3:>6.1f}ms"
        )


if __name__ == "__main__":
    main()
