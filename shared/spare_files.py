"""Spare files: small files that are given back instead of deleted, and taken again instead of created.

A store that creates a file for every instance and deletes one for every instance indexed (the pending marker, a
queue message) asks the file system for a new inode and frees one at the ingest rate. On ext4 without a journal
(common on cloud and VM images, and on the machine the benchmarks run on) allocating an inode skips, one buffer
look-up at a time, every inode of the group freed in the last 60 s (360 s while its inode table block is dirty):
measured here, creating an empty file cost 18 us in a fresh directory and 250-800 us after a few thousand
deletions nearby, and the SCP spent 2-4 ms of system time per small instance in that scan. A file moved to the
spare folder keeps its inode: the next writer renames it to a temporary name in its own folder and writes over it
(``fill``), so neither side allocates or frees an inode. A spare is written over and then cut to length, never
truncated to zero first: that frees its block for the write to allocate again, and ext4 starts the writeback of a
file truncated to zero when it is renamed or closed (auto_da_alloc), on the writer's path. Measured here: 52 us
with O_TRUNC, 12 us written over and cut; the SCP's system time per small instance 0.88 -> 0.33 ms.

Several processes share one spare folder: a file is taken by renaming it away, which exactly one taker can do, and
a taker that loses the race takes the next name. The folder holds at most ``capacity`` files (checked from a count
refreshed every ``_RECOUNT_EVERY`` gifts): past that, a file is deleted as before. A crash between taking a spare
and naming it leaves a temporary file, which the folder's own listing skips like any other temporary file and the
store's ``recover`` removes at the next start (shared.storage.filesystem).
"""

from __future__ import annotations

import os
import threading
import time

from shared.file_writes import write_at
from shared.unique_names import unique_name

SPARE_MAX_BYTES = 256 << 10  # a larger file is deleted: truncating it would cost its next writer more than a new one
_RECOUNT_EVERY = 256
_RELIST_SECONDS = 0.2  # when this process knows no spare, the folder is listed again at most this often


class SpareFiles:
    def __init__(self, folder: str, capacity: int = 4096) -> None:
        self._folder = folder
        self._capacity = capacity
        self._names: list[str] = []  # listed or given here; another process may have taken some meanwhile
        self._listed_at = float("-inf")
        self._count = 0  # of files in the folder, as last counted plus this process's gifts since
        self._gifts_since_count = _RECOUNT_EVERY
        self._lock = threading.Lock()

    def take(self, temporary_path: str) -> bool:
        """Move a spare file to ``temporary_path`` (in the same file system); False when there is none."""
        while True:
            name = self._next_name()
            if name is None:
                return False
            try:
                os.rename(os.path.join(self._folder, name), temporary_path)
                return True
            except FileNotFoundError:
                continue  # another process took it

    def fill(self, temporary_path: str, data: bytes) -> bool:
        """Move a spare file to ``temporary_path`` and make ``data`` its content; False when there is none."""
        if not self.take(temporary_path):
            return False
        fd = os.open(temporary_path, os.O_WRONLY)
        try:
            write_at(fd, [data], 0)
            os.ftruncate(fd, len(data))  # what the spare held beyond the new content
        finally:
            os.close(fd)
        return True

    def _next_name(self) -> str | None:
        with self._lock:
            if not self._names and time.monotonic() - self._listed_at >= _RELIST_SECONDS:
                self._listed_at = time.monotonic()
                try:
                    self._names = os.listdir(self._folder)
                except FileNotFoundError:
                    self._names = []
                self._count = len(self._names)
            return self._names.pop() if self._names else None

    def give(self, path: str, size: int) -> bool:
        """Keep the file at ``path`` as a spare instead of deleting it; False when it was not kept (too large, the
        folder full or missing): the caller deletes it."""
        if size > SPARE_MAX_BYTES or not self._room_left():
            return False
        name = unique_name()
        spare_path = os.path.join(self._folder, name)
        try:
            os.rename(path, spare_path)
        except FileNotFoundError:
            if not os.path.exists(path):
                raise
            os.makedirs(self._folder, exist_ok=True)  # the first gift
            os.rename(path, spare_path)
        with self._lock:
            self._count += 1
            self._names.append(name)
        return True

    def _room_left(self) -> bool:
        with self._lock:
            self._gifts_since_count += 1
            if self._gifts_since_count < _RECOUNT_EVERY:
                return self._count < self._capacity
            self._gifts_since_count = 0
        try:
            count = len(os.listdir(self._folder))  # other processes take and give too
        except FileNotFoundError:
            count = 0
        with self._lock:
            self._count = count
            return count < self._capacity
