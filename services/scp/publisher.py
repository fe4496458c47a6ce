"""Hands events to the queue off the C-STORE path, in batches, and keeps trying while the broker is down.

Losing an event here loses nothing: every stored instance has a pending marker that the sweeper re-publishes.
The buffer is bounded for the same reason.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SendBatch = Callable[[str, list[dict[str, object]]], None]


class EventPublisher:
    def __init__(self, send_batch: SendBatch, max_batch: int = 200, max_buffer: int = 50_000,
                 linger_seconds: float = 0.02) -> None:
        self._send_batch = send_batch
        self._max_batch = max_batch
        self._linger = linger_seconds
        self._buffer: queue.Queue[tuple[str, dict[str, object]]] = queue.Queue(maxsize=max_buffer)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-publisher", daemon=True)
        self.dropped = 0
        self.published = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, task_name: str, payload: dict[str, object]) -> None:
        try:
            self._buffer.put_nowait((task_name, payload))
        except queue.Full:
            self.dropped += 1  # the pending marker still leads the sweeper to it

    @property
    def backlog(self) -> int:
        return self._buffer.qsize()

    def stop(self, flush_seconds: float) -> None:
        """Stop after trying to send what is buffered for at most ``flush_seconds``."""
        self._flush_deadline = time.monotonic() + flush_seconds
        self._stop.set()
        self._thread.join(timeout=flush_seconds + 1)

    def _next_batch(self) -> list[tuple[str, dict[str, object]]]:
        try:
            first = self._buffer.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        # Wait a little for more: one task per batch keeps the indexer's per-task cost off each instance.
        deadline = time.monotonic() + self._linger
        while len(batch) < self._max_batch:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._buffer.get(timeout=remaining) if remaining > 0 else self._buffer.get_nowait())
            except queue.Empty:
                break
        return batch

    def _send(self, batch: list[tuple[str, dict[str, object]]]) -> list[tuple[str, dict[str, object]]]:
        """Send one message per task name; return what is still unsent if the broker fails midway."""
        by_task: dict[str, list[dict[str, object]]] = {}
        for task_name, payload in batch:
            by_task.setdefault(task_name, []).append(payload)
        groups = list(by_task.items())
        for index, (task_name, payloads) in enumerate(groups):
            try:
                self._send_batch(task_name, payloads)
            except Exception:
                return [(name, payload) for name, unsent in groups[index:] for payload in unsent]
            self.published += len(payloads)
        return []

    def _run(self) -> None:
        pending: list[tuple[str, dict[str, object]]] = []
        backoff = 0.2
        while True:
            if self._stop.is_set() and (not pending and self._buffer.empty() or time.monotonic() > self._flush_deadline):
                if pending or not self._buffer.empty():
                    log.warning("publisher.unsent_at_stop count=%d (pending markers remain)",
                                len(pending) + self._buffer.qsize())
                return
            if not pending:
                pending = self._next_batch()
                if not pending:
                    continue
            pending = self._send(pending)
            if not pending:
                backoff = 0.2
                continue
            # Broker down or refusing: keep what is unsent, retry with backoff.
            log.warning("publisher.broker_unavailable unsent=%d retry_in=%.1fs", len(pending), backoff)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
