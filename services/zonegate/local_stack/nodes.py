"""The local stack's Zonegate processes: ``zonegate start`` with the settings of each role.

Each node is a child in its own session (a Ctrl-C reaches ``zonegate up`` alone, which then stops
the data planes before the control plane, as an operator would), logging to a file under
``<prefix>/logs``. The environment is the user's with the stack's settings on top, so a
``ZONEGATE_LOG_LEVEL`` given to ``zonegate up`` reaches every node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from zonegate.embedded._process import log_tail, spawn, stop_process
from zonegate.embedded.ports import LOOPBACK
from zonegate.local_stack.ports import StackError

# A node drains in-flight requests before it exits; past this it is killed.
STOP_TIMEOUT = 20.0


def zonegate_argv() -> list[str]:
    """``zonegate`` of this installation, whether or not its scripts directory is on PATH."""
    return [sys.executable, "-m", "zonegate"]


@dataclass
class NodeProcess:
    name: str
    env: dict[str, str]
    log_path: Path
    ready_url: str  # answers 200 once the node is ready
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = spawn([*zonegate_argv(), "start"], log_path=self.log_path, env=self.env)

    def ready(self) -> bool:
        """True once ready; a node that exited is a ``StackError`` with the end of its log."""
        if self.process is None:
            return False
        if self.process.poll() is not None:
            raise StackError(
                f"{self.name} exited with status {self.process.returncode}; "
                f"the end of {self.log_path}:\n{log_tail(self.log_path, 15)}"
            )
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, first_signal=signal.SIGTERM, timeout=STOP_TIMEOUT, name=self.name)


def _environment(prefix: Path, settings: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({f"ZONEGATE_{name.upper()}": value for name, value in settings.items()})
    env["ZONEGATE_PREFIX"] = str(prefix)
    prefix.mkdir(parents=True, exist_ok=True)
    return env


def control_plane(
    prefix: Path, logs: Path, cluster: Mapping[str, str], dsn: str, admin_port: int
) -> NodeProcess:
    env = _environment(
        prefix,
        {
            **cluster,
            "role": "control_plane",
            "database": "postgres",
            "pg_dsn": dsn,
            "admin_listen": f"{LOOPBACK}:{admin_port}",
        },
    )
    return NodeProcess(
        "control plane", env, logs / "control-plane.log", f"http://{LOOPBACK}:{admin_port}/status"
    )


def data_plane(
    prefix: Path, logs: Path, cluster: Mapping[str, str], zone: str, proxy_port: int, status_port: int
) -> NodeProcess:
    env = _environment(
        prefix,
        {
            **cluster,
            "role": "data_plane",
            "database": "off",
            "declarative_config": "",
            "proxy_listen": f"{LOOPBACK}:{proxy_port}",
            "status_listen": f"{LOOPBACK}:{status_port}",
            "cluster_dp_labels": f"zone:{zone}",
            # One proxy process each: two data planes already share a laptop's cores.
            "workers": "1",
        },
    )
    return NodeProcess(
        f"data plane (zone {zone})",
        env,
        logs / f"data-plane-{zone}.log",
        f"http://{LOOPBACK}:{status_port}/status/ready",
    )
