"""The pid file of a node started on a data directory: written at start, removed at clean exit.

It records the process start time as well as the pid, so that a stale file (the process is gone, or the pid
now belongs to an unrelated process) is recognised and never used to signal the wrong process.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

PID_FILE_NAME = "pacs.pid"


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_ticks: int  # field 22 of /proc/<pid>/stat: start time since boot, in clock ticks


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    after_name = stat.rsplit(")", 1)[1].split()
    if after_name[0] in ("Z", "X"):
        return None  # exited (a zombie waiting for its parent): not running
    return int(after_name[19])  # field 22 overall; fields after "(comm)" start at field 3


def pid_file(data_dir: Path) -> Path:
    return data_dir / PID_FILE_NAME


def write_pid_file(data_dir: Path) -> None:
    pid = os.getpid()
    record = {"pid": pid, "start_ticks": _start_ticks(pid)}
    temporary = pid_file(data_dir).with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, pid_file(data_dir))


def remove_pid_file(data_dir: Path) -> None:
    pid_file(data_dir).unlink(missing_ok=True)


def read_pid_file(data_dir: Path) -> PidRecord | None:
    """The recorded node, or None when there is no readable pid file."""
    try:
        raw = json.loads(pid_file(data_dir).read_text())
        return PidRecord(int(raw["pid"]), int(raw["start_ticks"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_running(record: PidRecord) -> bool:
    """True only if that very process (same pid, same start time) is still alive."""
    return _start_ticks(record.pid) == record.start_ticks
