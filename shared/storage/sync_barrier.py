"""Group commit for a local object store: one ``syncfs`` makes the writes of every waiting thread durable.

PERFORMANCE.md ("durability has a price"): associations that store at the same time share one flush of the file
system rather than paying one each. A thread calls ``sync()`` after its writes; the call returns once a flush that
started after the call began has completed, so everything the thread wrote before is durable. While one flush
runs, the threads that arrive wait for the next one, which a single thread then runs for all of them.
``syncfs`` writes back every dirty page and commits the file system's journal (Linux; it reports writeback
errors since 5.8); where it is missing, ``os.sync`` is used. It flushes whatever else is dirty on that file system
too, so the store's folder is best on a file system of its own when other programs write heavily beside it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from pathlib import Path

_KEPT_FAILURES = 1024  # a waiter looks up the flush it needed; older entries are dropped


def _syncfs_of(folder: Path) -> Callable[[], None]:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    syncfs = getattr(libc, "syncfs", None)
    if syncfs is None:
        return os.sync

    # One descriptor while the folder stays on the same file system: syncfs reports a writeback error that happened
    # after the descriptor was opened (once), so an error in the writeback of pages written before a flush is not
    # missed. A folder now on another device (re-created on a new mount) gets a new descriptor.
    descriptor: list[int] = []

    def flush() -> None:
        if descriptor and os.fstat(descriptor[0]).st_dev != os.stat(folder).st_dev:
            os.close(descriptor.pop())
        if not descriptor:
            descriptor.append(os.open(folder, os.O_RDONLY | os.O_DIRECTORY))
        if syncfs(descriptor[0]) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))

    return flush


class SyncBarrier:
    def __init__(self, folder: Path, flush: Callable[[], None] | None = None) -> None:
        self._flush = flush or _syncfs_of(folder)
        self._lock = threading.Condition()
        self._started = 0  # flushes begun
        self._finished = 0  # flushes ended (successfully or not)
        self._failures: dict[int, OSError] = {}  # flush number -> its error (the latest few)
        self._running = False

    def sync(self) -> None:
        """Return when everything written before this call is durable; raise OSError if the flush failed."""
        with self._lock:
            needed = self._started + 1  # a flush that begins after now
            while self._finished < needed:
                if self._running:
                    self._lock.wait()
                    continue
                self._running = True
                self._started += 1
                number = self._started
                self._lock.release()
                error: OSError | None = None
                try:
                    self._flush()
                except OSError as exc:
                    error = exc
                finally:
                    self._lock.acquire()
                    self._running = False
                    self._finished = number
                    if error is not None:
                        self._failures = {n: e for n, e in self._failures.items() if n > number - _KEPT_FAILURES}
                        self._failures[number] = error
                    self._lock.notify_all()
            failure = self._failures.get(needed)
            if failure is not None:
                raise failure
