"""How much the node holds, for the storage limits (storage_max_bytes, storage_max_instances), kept off the ingest path.

Each ingesting process (every `pacs scp`, every `pacs api` for STOW-RS) keeps a running total:

    held = index totals (count and sum of sizes of the instances rows)
         + pending instances (the .pending/ markers in the object store: acknowledged, not yet indexed)
         + what this process stored since the last refresh

A background thread refreshes the first two every ``REFRESH_SECONDS``, and only while a limit is configured (no limit,
no query). ``admit`` is arithmetic on that snapshot: no database and no store request per instance. Several
processes each add only their own instances between refreshes, so the limit can be passed by what arrives within
one refresh interval; it is a quota, not an exact ceiling.

PostgreSQL down: the last index totals are kept and the pending markers (which pile up while nothing can be
indexed, so they cover what every process stored meanwhile) are still counted; the limit stays enforced. A process
that never read the index since it started (started while the database was down) does not know the totals: it
admits everything until the first read (ingest survives its helpers) and logs ``storage_usage.unknown`` once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import Instance
from shared.events import InstanceStored
from shared.pending import PENDING_PREFIX
from shared.storage import ObjectNotFound, ObjectStore, StorageError, StorageFull

log = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0
DEMAND_SECONDS = 120.0  # refreshing stops this long after the last admit that had a limit to check


class StorageLimitReached(StorageFull):
    """A configured limit (``limit``: "bytes" or "instances") would be passed by this instance."""

    def __init__(self, limit: str) -> None:
        super().__init__(f"storage limit reached (storage_max_{limit})")
        self.limit = limit


@dataclass(frozen=True)
class Usage:
    instances: int
    bytes: int
    known: bool  # False until the index totals were read once


class StorageUsage:
    def __init__(self, sessions: sessionmaker[Session], store: ObjectStore,
                 refresh_seconds: float = REFRESH_SECONDS, background: bool = True) -> None:
        self._sessions = sessions
        self._store = store
        self._refresh_seconds = refresh_seconds
        self._background = background  # False: only refresh_now() refreshes (tests)
        self._lock = threading.Lock()
        self._index: tuple[int, int] | None = None  # (instances, bytes) last read
        self._pending_sizes: dict[str, int] = {}  # marker key -> instance size
        self._local = (0, 0)  # (instances, bytes) stored by this process since the last refresh
        self._demanded_at = -DEMAND_SECONDS
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._warned_unknown = False

    # ---- the ingest path: no I/O ---------------------------------------------------------------------------

    def current(self) -> Usage:
        with self._lock:
            index = self._index or (0, 0)
            pending = (len(self._pending_sizes), sum(self._pending_sizes.values()))
            return Usage(index[0] + pending[0] + self._local[0], index[1] + pending[1] + self._local[1],
                         self._index is not None)

    def admit(self, size: int, max_bytes: int | None, max_instances: int | None) -> None:
        """Raise StorageLimitReached if one more instance of ``size`` bytes would pass a limit."""
        if max_bytes is None and max_instances is None:
            return
        self._demand()
        usage = self.current()
        if not usage.known:
            if not self._warned_unknown:
                log.warning("storage_usage.unknown (index not read yet: limits not enforced until it is)")
                self._warned_unknown = True
            return
        if max_instances is not None and usage.instances + 1 > max_instances:
            raise StorageLimitReached("instances")
        if max_bytes is not None and usage.bytes + size > max_bytes:
            raise StorageLimitReached("bytes")

    def ensure_known(self) -> None:
        """Read the totals now if they were never read (for callers that may wait on the database: STOW-RS)."""
        if self._index is None:
            self.refresh_now()

    def added(self, size: int) -> None:
        with self._lock:
            self._local = (self._local[0] + 1, self._local[1] + size)

    # ---- refreshing ----------------------------------------------------------------------------------------

    def _demand(self) -> None:
        self._demanded_at = time.monotonic()
        if self._thread is None and self._background:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="storage-usage", daemon=True)
                    self._thread.start()

    def refresh_now(self) -> None:
        with self._lock:
            local, self._local = self._local, (0, 0)
        index = self._read_index()
        pending = self._read_pending()
        with self._lock:
            if index is not None:
                self._index = index
            if pending is not None:
                self._pending_sizes = pending
            if index is None or pending is None:  # not rebased: what this process stored still counts
                self._local = (self._local[0] + local[0], self._local[1] + local[1])

    def _read_index(self) -> tuple[int, int] | None:
        try:
            with self._sessions() as session:
                count, total = session.execute(
                    select(func.count(Instance.pk), func.coalesce(func.sum(Instance.size), 0))).one()
            return int(count), int(total)
        except SQLAlchemyError as exc:
            log.warning("storage_usage.index_unavailable error=%s", exc.__class__.__name__)
            return None

    def _read_pending(self) -> dict[str, int] | None:
        """Sizes of the pending instances; each marker is read once (its size never changes)."""
        try:
            sizes: dict[str, int] = {}
            for info in self._store.list(PENDING_PREFIX):
                known = self._pending_sizes.get(info.key)
                if known is None:
                    try:
                        known = InstanceStored.model_validate_json(self._store.get(info.key)).size
                    except (ObjectNotFound, ValidationError, ValueError):
                        continue
                sizes[info.key] = known
            return sizes
        except StorageError as exc:
            log.warning("storage_usage.store_unavailable error=%s", exc.__class__.__name__)
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            if time.monotonic() - self._demanded_at < DEMAND_SECONDS:
                try:
                    self.refresh_now()
                except Exception as exc:  # never let the thread die
                    log.warning("storage_usage.refresh_failed error=%s", exc.__class__.__name__)
            self._stop.wait(self._refresh_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
