"""Hands events to the queue off the C-STORE path, in batches, and keeps trying while the broker is down.

Losing an event here loses nothing: every stored instance has a pending marker that the sweeper re-publishes.
The buffer is bounded for the same reason. The sending thread is woken once per batch (by the event that finds the
buffer empty), not once per event: at a thousand instances a second, a wake per event cost two GIL hand-offs per
instance between the receiving threads and this one.

A batch waits up to ``linger_seconds`` (the setting ``index_batch_wait_seconds``) for more events while they keep
coming, and leaves as soon as it is full (``max_batch``, the setting ``indexer_batch_size``) or once none arrived for
``quiet_seconds`` (``index_batch_quiet_seconds``): the indexer's cost per task (Celery, the broker, a transaction) is
then spread over up to ``max_batch`` instances rather than a few, a fast push never waits for the linger, and an
instance sent alone is handed over after the short pause (0.05 s: queryable ~0.06 s after its Success, where a 0.5 s
linger alone made it 0.51 s). Measured with four associations pushing 526 KB instances to `pacs serve` (bench/README.md,
session 12): the machine's CPU per instance fell from 8.2–8.7 ms with a 20 ms wait to 6.2–7.3 ms with 100 ms, and the
acknowledged rate rose from 202–220 to 241–285 per second; with small instances (session 22) a 0.5 s wait, full batches
leaving at once, acknowledged ~15 % more than 0.1 s. When an association ends, ``hurry`` sends what is buffered at once:
the last instances of a push are not kept waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

SendBatch = Callable[[str, list[dict[str, object]]], None]


class EventPublisher:
    def __init__(self, send_batch: SendBatch, linger_seconds: float, max_batch: int = 200,
                 max_buffer: int = 50_000, quiet_seconds: float | None = None) -> None:
        self._send_batch = send_batch
        self._max_batch = max_batch
        self._linger = linger_seconds
        self._quiet = quiet_seconds  # a batch leaves once no event arrived for this long (None: only the linger)
        self._max_buffer = max_buffer
        self._buffer: deque[tuple[str, dict[str, object]]] = deque()
        self._arrived = threading.Event()  # set by the event that found the buffer empty
        self._hurry = threading.Event()  # ends a batch's wait for more (``hurry``, or a full batch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-publisher", daemon=True)
        self.dropped = 0
        self.published = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, task_name: str, payload: dict[str, object]) -> None:
        buffered = len(self._buffer)
        if buffered >= self._max_buffer:
            self.dropped += 1  # the pending marker still leads the sweeper to it
            return
        self._buffer.append((task_name, payload))
        if buffered == 0:
            self._arrived.set()
        elif buffered + 1 >= self._max_batch and not self._hurry.is_set():
            self._hurry.set()  # a full batch need not wait for the linger (>=: another thread's append may come first)

    def hurry(self) -> None:
        """Send what is buffered without waiting for more (an association ended: its instances are all here)."""
        if self._buffer:
            self._hurry.set()

    @property
    def backlog(self) -> int:
        return len(self._buffer)

    def stop(self, flush_seconds: float) -> None:
        """Stop after trying to send what is buffered for at most ``flush_seconds``."""
        self._flush_deadline = time.monotonic() + flush_seconds
        self._stop.set()
        self._hurry.set()
        self._thread.join(timeout=flush_seconds + 1)

    def _next_batch(self) -> list[tuple[str, dict[str, object]]]:
        if not self._buffer:
            self._arrived.wait(0.2)
            self._arrived.clear()  # before taking: an event added from now on finds the buffer empty or is taken
            if not self._buffer:
                return []
        self._gather()
        self._hurry.clear()  # before taking: a hurry from now on is for what arrives after this batch
        batch: list[tuple[str, dict[str, object]]] = []
        while len(batch) < self._max_batch:
            try:
                batch.append(self._buffer.popleft())
            except IndexError:
                break
        return batch

    def _gather(self) -> None:
        """Wait for more events while they keep coming (one task per batch keeps the indexer's per-task cost off
        each instance): until the batch is full or hurried, the linger is over, or, with ``quiet_seconds``, no event
        arrived for that long. The buffer is looked at every ``quiet_seconds``: a wake per event would cost the
        receiving threads a GIL hand-off each."""
        deadline = time.monotonic() + self._linger
        seen = len(self._buffer)
        while seen < self._max_batch and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._hurry.wait(remaining if self._quiet is None else min(self._quiet, remaining)):
                return
            buffered = len(self._buffer)
            if self._quiet is not None and buffered == seen:
                return  # the stream paused: what came is all there is for now
            seen = buffered

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
            if self._stop.is_set() and (not pending and not self._buffer or time.monotonic() > self._flush_deadline):
                if pending or self._buffer:
                    log.warning("publisher.unsent_at_stop count=%d (pending markers remain)",
                                len(pending) + len(self._buffer))
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
