"""The sweeper: hands stored-but-unindexed instances to the indexer again.

It reads only the pending ledger (one marker per acknowledged, unindexed instance), so a pass costs what is
pending, never the size of the archive. Markers younger than the grace period are left to their events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from services.indexer.retry_policy import REPUBLISH_BACKOFF_SECONDS
from shared.events import InstanceStored
from shared.pending import PendingLedger
from shared.storage import ObjectStore, StorageError

log = logging.getLogger(__name__)

Publish = Callable[[list[dict[str, object]]], None]


class Sweeper:
    def __init__(self, store: ObjectStore, ledger: PendingLedger, publish: Publish, grace_seconds: float,
                 batch_size: int) -> None:
        self._store = store
        self._ledger = ledger
        self._publish = publish
        self._grace = grace_seconds
        self._batch_size = batch_size
        self._republished_at: dict[str, float] = {}

    def sweep_once(self) -> int:
        """One pass; returns how many instances were handed to the indexer again."""
        now = time.monotonic()
        backoff = max(self._grace, REPUBLISH_BACKOFF_SECONDS)
        batch: list[InstanceStored] = []
        handed_over = 0
        seen: set[str] = set()
        for event in self._ledger.stale(self._grace):
            seen.add(event.sop_instance_uid)
            if now - self._republished_at.get(event.sop_instance_uid, -backoff) < backoff:
                continue
            if self._store.stat(event.object_key) is None:
                # The store failed after the marker was written: the instance was never acknowledged.
                self._ledger.resolve(event.sop_instance_uid)
                continue
            batch.append(event)
            if len(batch) >= self._batch_size:
                handed_over += self._hand_over(batch, now)
                batch = []
        if batch:
            handed_over += self._hand_over(batch, now)
        self._republished_at = {uid: at for uid, at in self._republished_at.items() if uid in seen}
        if handed_over:
            log.info("sweeper.handed_over count=%d", handed_over)
        return handed_over

    def _hand_over(self, batch: list[InstanceStored], now: float) -> int:
        self._publish([event.model_dump(mode="json") for event in batch])
        for event in batch:
            self._republished_at[event.sop_instance_uid] = now
        return len(batch)


class SweeperThread:
    def __init__(self, sweeper: Sweeper, interval_seconds: float) -> None:
        self._sweeper = sweeper
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._sweeper.sweep_once()
            except StorageError as exc:
                log.warning("sweeper.store_unavailable error=%s", exc.__class__.__name__)
            except Exception as exc:  # broker down: try again next pass
                log.warning("sweeper.failed error=%s", exc.__class__.__name__)
