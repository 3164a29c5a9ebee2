"""The nats-server configurations of ``deploy/compose.yaml``, as ``zonegate nats config`` writes them.

    python ops/nats/generate.py           # rewrite every ops/nats/*.conf (zonegate must be on PATH)
    python ops/nats/generate.py --print   # show the exact commands, as shell lines

Run it after changing a command below or upgrading Zonegate: ``tests/deploy`` regenerates every
file with these commands and fails when one differs from the checked-in copy.

Topology (see the compose file): region A is the hub, a 3-node JetStream cluster (``nats-a1``
to ``nats-a3``, domain ``region-a``) that also listens for leaf nodes; region B is one
server (``nats-b1``, domain ``region-b``) that is a leaf node of the hub. The control plane keeps
a mirror of the config stream in ``region-b`` (``ZONEGATE_CLUSTER_REGION_DOMAINS``), so region B
boots and updates from its own copy while the link is cut.

PKI mode: every server has its own certificate from the compose stack's CA, mounted at /certs,
with JetStream storage in the volume mounted at /data. Monitoring stays on the container's
loopback (the health check reads it there). Region B dials ``nats-hub``, a network alias of the
three hub servers, so its first connection does not depend on any one of them.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

HERE: Final = Path(__file__).resolve().parent
HUB: Final = ("nats-a1", "nats-a2", "nats-a3")
REGION_B: Final = "nats-b1"
HUB_DOMAIN: Final = "region-a"
REGION_B_DOMAIN: Final = "region-b"
HUB_LEAF_URL: Final = "nats-leaf://nats-hub:7422"


def _server(name: str, domain: str) -> list[str]:
    return [
        "zonegate",
        "nats",
        "config",
        "--mode",
        "pki",
        "--cert",
        f"/certs/{name}.crt",
        "--key",
        f"/certs/{name}.key",
        "--ca",
        "/certs/ca.crt",
        "--listen",
        "0.0.0.0:4222",
        "--http",
        "127.0.0.1:8222",
        "--store-dir",
        "/data/jetstream",
        "--server-name",
        name,
        "--js-domain",
        domain,
    ]


def commands() -> dict[str, list[str]]:
    """File name in ops/nats -> the full ``zonegate nats config`` command that writes it (no ``-o``)."""
    routes = ",".join(f"nats-route://{name}:6222" for name in HUB)
    result: dict[str, list[str]] = {}
    for name in HUB:
        result[f"{name}.conf"] = [
            *_server(name, HUB_DOMAIN),
            "--cluster-name",
            HUB_DOMAIN,
            "--cluster-listen",
            "0.0.0.0:6222",
            "--routes",
            routes,
            "--leaf-listen",
            "0.0.0.0:7422",
        ]
    result[f"{REGION_B}.conf"] = [
        *_server(REGION_B, REGION_B_DOMAIN),
        # Data planes in region B may also read the hub's stream (read-only), not only the mirror.
        "--remote-js-domain",
        HUB_DOMAIN,
        "--leaf-remote",
        HUB_LEAF_URL,
    ]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--print", action="store_true", help="print the commands instead of running them")
    parser.add_argument("--zonegate", default="zonegate", help="the zonegate command (default: on PATH)")
    args = parser.parse_args(argv)
    for name, command in commands().items():
        full = [*command, "-o", f"ops/nats/{name}"]
        if args.print:
            print(shlex.join(full))
            continue
        executable = shutil.which(args.zonegate)
        if executable is None:
            print(f"error: {args.zonegate}: command not found", file=sys.stderr)
            return 1
        subprocess.run([executable, *command[1:], "-o", str(HERE / name)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
