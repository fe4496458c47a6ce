"""The storage lifecycle loop of `pacs indexer`: every LIFECYCLE_INTERVAL_SECONDS it finishes deletions left
unfinished (objects whose index rows are gone: shared.deletion) and settles stale deletion marks, recycles the oldest studies when
``storage_recycle`` is on (shared.recycling) and applies retention (shared.retention) when ``retention_days`` is
set. With several indexers, recycling and retention run in one at a time (PostgreSQL advisory lock); the unfinished
deletions are idempotent, so any indexer may finish them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from shared.deletion import finish_pending_deletions, settle_stale_marks
from shared.events import utc_now
from shared.node_config import default_config_for, load_config
from shared.recycling import recycle
from shared.retention import RetentionReport, run_retention
from shared.runtime import Runtime
from shared.storage import StorageError

log = logging.getLogger(__name__)

LIFECYCLE_INTERVAL_SECONDS = 10.0


class Lifecycle:
    def __init__(self, runtime: Runtime, clock: Callable[[], datetime] = utc_now) -> None:
        self._runtime = runtime
        self._clock = clock

    def run_once(self) -> RetentionReport | None:
        """One pass; the retention report, or None when retention is off."""
        runtime = self._runtime
        finish_pending_deletions(runtime.store, runtime.sessions)
        settle_stale_marks(runtime.store, runtime.sessions)
        with runtime.sessions() as session:
            config = load_config(session, default_config_for(runtime.settings))
        now = self._clock()
        recycle(runtime.engine, runtime.sessions, runtime.store, config, now)
        if config.retention_days is None:
            return None
        return run_retention(runtime.engine, runtime.sessions, runtime.store, config, now)


class LifecycleThread:
    def __init__(self, lifecycle: Lifecycle, interval_seconds: float = LIFECYCLE_INTERVAL_SECONDS) -> None:
        self._lifecycle = lifecycle
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lifecycle", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._lifecycle.run_once()
            except (SQLAlchemyError, StorageError) as exc:  # a dependency down: next pass
                log.warning("lifecycle.pass_failed error=%s", exc.__class__.__name__)
            except Exception:  # never let the thread die
                log.exception("lifecycle.pass_failed")
