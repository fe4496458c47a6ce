"""The associations every SCP process of a node holds, so that ``max_associations`` limits the node.

`pacs serve` runs several SCP processes on one listening socket (services/scp/listening.py) and the kernel gives a
connection to any of them; a per-process count would let the node hold the limit once per process. Each process
keeps its count of admitted associations in one small table file in the data directory (``pid -> count, written
at``), read and written under an exclusive ``flock``: an admission adds the other processes' counts to its own in the
same lock. A process writes its count again when an association ends, and every second (a row not written for
STALE_SECONDS belongs to a process that died or hangs, and no longer counts). `pacs scp` replicas with data
directories of their own keep a limit each.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

TABLE_NAME = "scp-associations.json"
REFRESH_SECONDS = 1.0
STALE_SECONDS = 5.0


class NodeAssociations:
    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / TABLE_NAME
        self._pid = str(os.getpid())
        self._lock = threading.Lock()  # flock is per open file: the threads of this process take turns first
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, report_count: Callable[[], None]) -> None:
        """Call ``report_count`` (which calls ``report``) every REFRESH_SECONDS until ``stop``."""
        def refresh() -> None:
            while not self._stop.wait(REFRESH_SECONDS):
                try:
                    report_count()
                except Exception:  # a full disk, a removed data directory: the next round tries again
                    log.exception("scp.association_table_failed")

        self._thread = threading.Thread(target=refresh, name="node-associations", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with self._lock, self._locked_table() as table:  # the process's row goes with it
                table.rows.pop(self._pid, None)
        except OSError:
            pass
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def admit(self, own: int, limit: int) -> bool:
        """Whether one more association fits: ``own`` are held by this process; if so it is counted."""
        with self._lock, self._locked_table() as table:
            others = sum(count for pid, (count, _) in table.rows.items() if pid != self._pid)
            admitted = own + others < limit
            table.rows[self._pid] = (own + 1 if admitted else own, time.time())
            return admitted

    def report(self, own: int) -> None:
        """This process holds ``own`` associations now."""
        with self._lock, self._locked_table() as table:
            table.rows[self._pid] = (own, time.time())

    def _locked_table(self) -> "_Table":
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        return _Table(self._fd)


class _Table:
    """The table file, read on entering (rows of live processes only) and written back on leaving, under flock."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.rows: dict[str, tuple[int, float]] = {}

    def __enter__(self) -> "_Table":
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            content = os.pread(self._fd, 1 << 16, 0)
            stored = json.loads(content) if content else {}
            fresh_since = time.time() - STALE_SECONDS
            self.rows = {str(pid): (int(count), float(written)) for pid, (count, written) in stored.items()
                         if float(written) >= fresh_since}
        except (ValueError, TypeError):
            log.warning("scp.association_table_unreadable (rebuilt)")
            self.rows = {}
        except BaseException:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            content = json.dumps({pid: list(row) for pid, row in self.rows.items()}).encode()
            os.pwrite(self._fd, content, 0)
            os.ftruncate(self._fd, len(content))
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
