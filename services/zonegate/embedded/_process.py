"""Child-process plumbing shared by the embedded servers.

Invariant: every child started through `spawn` is in `_LIVE` until `stop_process` has reaped it, and an
atexit hook kills whatever is still there. A test run that dies between start and teardown (an error in
a fixture, a KeyboardInterrupt) must not leave postgres or nats-server running behind it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import structlog

log = structlog.get_logger(__name__)

_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    group: int | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` with stdout and stderr appended to `log_path`; track it for the atexit safety net."""
    log_file: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - the child keeps its own copy of the fd
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            group=group,
            # Dropping root's supplementary groups matters when `user` is set: postgres checks ownership.
            extra_groups=[] if user is not None else None,
            # Own session: a Ctrl-C in the terminal reaches pytest, which then stops us in order,
            # instead of every child dying at once in the middle of a test.
            start_new_session=True,
        )
    finally:
        log_file.close()
    with _LIVE_LOCK:
        _LIVE.add(process)
    return process


def stop_process(
    process: subprocess.Popen[bytes], *, first_signal: signal.Signals, timeout: float, name: str
) -> int | None:
    """Send `first_signal`, wait up to `timeout` seconds, then SIGKILL. Returns the exit code."""
    try:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it exited after poll(); wait() reaps it
                process.send_signal(first_signal)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("embedded.kill", process=name, pid=process.pid, after_seconds=timeout)
                process.kill()
                process.wait(timeout=10)
        return process.returncode
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(process)


class StartStop:
    """``with server:`` starts it and always stops it; subclasses define ``start`` and ``stop``."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file, for error messages that explain a failed start."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        leftovers = list(_LIVE)
        _LIVE.clear()
    for process in leftovers:
        if process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):  # unkillable (D state): give up at exit
                process.wait(timeout=5)


atexit.register(_kill_leftovers)
