"""file-log's handler: one JSON line per request, written by a background thread, never on the loop.

The log phase encodes the entry and puts the line on the path's ``FileWriter`` queue (no
waiting); the writer thread takes whatever has gathered and appends it in one write, keeping the
file open, or reopening it for each write with ``reopen`` (so a rotated file is followed, as
Kong's ``reopen`` does). A write that fails is logged and the lines are dropped: a full disk
must not stop the proxy. One writer per path in each proxy process; lines of one process never
interleave within a line (one ``write`` per batch on an ``O_APPEND`` file).
"""

from __future__ import annotations

import json
import queue
import threading
from typing import IO, Final

import structlog

from zonegate import __version__
from zonegate.plugins.api import Plugin, PluginContext, SharedIndexes

log = structlog.get_logger(__name__)

MAX_BATCH: Final = 1000


class FileWriter:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: queue.SimpleQueue[tuple[str, bool]] = queue.SimpleQueue()
        self.handle: IO[str] | None = None
        self.thread = threading.Thread(target=self._run, name=f"file-log:{path}", daemon=True)
        self.thread.start()

    def put(self, line: str, reopen: bool) -> None:
        self.lines.put((line, reopen))

    def _run(self) -> None:
        while True:
            line, reopen = self.lines.get()
            batch = [line]
            while len(batch) < MAX_BATCH:
                try:
                    more, reopen_more = self.lines.get_nowait()
                except queue.Empty:
                    break
                batch.append(more)
                reopen = reopen or reopen_more
            self._write("".join(batch), reopen)

    def _write(self, text: str, reopen: bool) -> None:
        try:
            if self.handle is None or reopen:
                if self.handle is not None:
                    self.handle.close()
                self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            self.handle.write(text)
            self.handle.flush()
        except OSError as exc:
            log.error("file_log.write_failed", path=self.path, error=str(exc))
            if self.handle is not None:
                self.handle.close()
            self.handle = None


_writers: dict[str, FileWriter] = {}
_writers_lock = threading.Lock()


def writer_for(path: str) -> FileWriter:
    with _writers_lock:
        writer = _writers.get(path)
        if writer is None:
            writer = _writers[path] = FileWriter(path)
        return writer


class FileLog(Plugin):
    NAME = "file-log"
    PRIORITY = 9
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        self.path: str = self.config["path"]
        self.reopen: bool = self.config["reopen"]
        self.writer: FileWriter | None = None  # started on the first request, in the proxy process

    def log(self, ctx: PluginContext) -> None:
        writer = self.writer
        if writer is None:
            writer = self.writer = writer_for(self.path)
        writer.put(json.dumps(ctx.serialize(), default=str, separators=(",", ":")) + "\n", self.reopen)
