"""`pacs stop`: stop the node started by `pacs serve` on a data directory (through its pid file)."""

from __future__ import annotations

import os
import signal
import time

from shared.pidfile import is_running, pid_file, read_pid_file, remove_pid_file
from shared.settings import Settings

STOP_WAIT_SECONDS = 20.0


def stop_node(settings: Settings) -> int:
    data_dir = settings.data_dir.resolve()
    record = read_pid_file(data_dir)
    if record is None:
        if pid_file(data_dir).exists():
            print(f"unreadable pid file {pid_file(data_dir)}: removed; no node was signalled")
            remove_pid_file(data_dir)
        else:
            print(f"no node is running on {data_dir} (no pid file)")
        return 1
    if not is_running(record):
        print(f"stale pid file {pid_file(data_dir)} (process {record.pid} is not that node any more): "
              "removed; no process was signalled")
        remove_pid_file(data_dir)
        return 1
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while time.monotonic() < deadline:
        if not is_running(record):
            print(f"node (pid {record.pid}) on {data_dir} stopped")
            return 0
        time.sleep(0.1)
    print(f"node (pid {record.pid}) did not stop within {STOP_WAIT_SECONDS:.0f} s")
    return 1
