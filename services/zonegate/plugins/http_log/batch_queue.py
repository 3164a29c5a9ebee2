"""Kong's plugin queue (``kong/tools/queue.lua``), small: entries in, batches out, in the background.

``put`` never blocks and never awaits: the log phase appends to a deque and, the first time,
starts the queue's one sender task on the running loop. The sender waits for an entry, then up
to ``max_coalescing_delay`` for the batch to fill (``max_batch_size``), and hands the batch to
``send``. A failed batch is retried after ``initial_retry_delay``, doubled each time up to
``max_retry_delay``, until ``max_retry_time`` has passed; then it is dropped and logged. A full
queue (``max_entries``) drops its oldest entry. ``flush`` sends what is left when the process
stops. Invariant: at most one batch in flight per queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import structlog

log = structlog.get_logger(__name__)

Send = Callable[[list[Any]], Awaitable[None]]


class BatchQueue:
    def __init__(self, name: str, settings: Mapping[str, Any], send: Send) -> None:
        self.name = name
        self.send = send
        self.max_batch_size: int = settings["max_batch_size"]
        self.max_coalescing_delay: float = settings["max_coalescing_delay"]
        self.max_entries: int = settings["max_entries"]
        self.max_retry_time: float = settings["max_retry_time"]
        self.initial_retry_delay: float = settings["initial_retry_delay"]
        self.max_retry_delay: float = settings["max_retry_delay"]
        self.entries: deque[Any] = deque()
        self.wakeup: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.sent_batches = 0
        self.in_flight: list[Any] | None = None  # the batch being sent or retried

    def put(self, entry: Any) -> None:
        if len(self.entries) >= self.max_entries:
            self.entries.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("log_queue.full", queue=self.name, dropped=self.dropped)
        self.entries.append(entry)
        if self.task is None:
            self.wakeup = asyncio.Event()
            self.task = asyncio.get_running_loop().create_task(self._run())
        elif len(self.entries) >= self.max_batch_size or len(self.entries) == 1:
            assert self.wakeup is not None
            self.wakeup.set()

    async def _run(self) -> None:
        wakeup = self.wakeup
        assert wakeup is not None
        while True:
            if not self.entries:
                wakeup.clear()
                await wakeup.wait()
            deadline = time.monotonic() + self.max_coalescing_delay
            while len(self.entries) < self.max_batch_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wakeup.clear()
                try:
                    await asyncio.wait_for(wakeup.wait(), left)
                except TimeoutError:
                    break
            batch = [self.entries.popleft() for _ in range(min(self.max_batch_size, len(self.entries)))]
            if batch:
                await self._deliver(batch)

    async def _deliver(self, batch: list[Any]) -> None:
        self.in_flight = batch
        await self._attempts(batch)
        self.in_flight = None

    async def _attempts(self, batch: list[Any]) -> None:
        started = time.monotonic()
        delay = self.initial_retry_delay
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.send(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - started + delay > self.max_retry_time:
                    log.error(
                        "log_queue.batch_dropped",
                        queue=self.name,
                        entries=len(batch),
                        attempts=attempt,
                        error=str(exc) or type(exc).__name__,
                    )
                    return
                log.warning("log_queue.send_failed", queue=self.name, attempt=attempt, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            self.sent_batches += 1
            return

    async def close(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def flush(self, seconds: float) -> None:
        """Stop the sender and send what is queued now, without coalescing or retries, for at
        most ``seconds`` (Kong's queues flush when their worker exits). The batch that
        was in flight goes again (delivery is at least once); what is left is dropped, logged."""
        await self.close()
        if self.in_flight is not None:
            self.entries.extendleft(reversed(self.in_flight))
            self.in_flight = None
        deadline = time.monotonic() + seconds
        while self.entries and (left := deadline - time.monotonic()) > 0:
            batch = [self.entries.popleft() for _ in range(min(self.max_batch_size, len(self.entries)))]
            try:
                await asyncio.wait_for(self.send(batch), left)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.entries.extendleft(reversed(batch))
                log.warning("log_queue.flush_failed", queue=self.name, error=str(exc) or type(exc).__name__)
                break
            self.sent_batches += 1
        if self.entries:
            log.error("log_queue.batch_dropped", queue=self.name, entries=len(self.entries), attempts=1)
            self.entries.clear()


class Outbound:
    """A sending plugin's way out of one proxy process: its queues (one per plugin instance and
    config, kept across reloads while the config is unchanged, as Kong keys its queues) and one
    aiohttp client, opened on first use. ``close``: a stopping process sends what the queues
    hold, for at most ``seconds``, then closes the client."""

    def __init__(self, user_agent: str) -> None:
        self.user_agent = user_agent
        self.queues: dict[tuple[str, str], BatchQueue] = {}
        self._session: aiohttp.ClientSession | None = None

    def client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(keepalive_timeout=60.0),
                headers={"User-Agent": self.user_agent},
            )
        return self._session

    def queue(self, key: tuple[str, str], name: str, settings: Mapping[str, Any], send: Send) -> BatchQueue:
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = BatchQueue(name, settings, send)
        return queue

    async def close(self, seconds: float) -> None:
        pending = list(self.queues.values())
        self.queues.clear()
        await asyncio.gather(*(queue.flush(seconds) for queue in pending))
        session, self._session = self._session, None
        if session is not None:
            await session.close()
