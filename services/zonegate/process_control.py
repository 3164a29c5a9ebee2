"""What every long-running Zonegate node shares: its pid file, start-up errors, and being signalled.

``zonegate stop`` and ``zonegate reload`` find the node through ``<prefix>/zonegate.pid``,
whatever its role.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Final

PID_FILE: Final = "zonegate.pid"


class StartError(Exception):
    """Start-up cannot go on; ``lines`` are printed as they are (every config error located)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0] if lines else "start-up failed")
        self.lines = lines


def signal_running_node(prefix: Path, signum: signal.Signals) -> int:
    """Signal the node whose pid is in the prefix; returns the pid."""
    pid_path = prefix / PID_FILE
    try:
        pid = int(pid_path.read_text().strip())
    except (OSError, ValueError):
        raise StartError([f"no running Zonegate node in {prefix} (no readable {pid_path})"]) from None
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        raise StartError([f"no process {pid} (stale {pid_path})"]) from None
    return pid
