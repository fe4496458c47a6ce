"""Tests of object stamps need a file system that keeps inode generations (ext4, XFS, btrfs; not tmpfs)."""

from __future__ import annotations

import os
from pathlib import Path

from shared.storage.file_stamp import file_stamp
from tests.environment import unavailable


def stamp_of_path(path: Path) -> str | None:
    fd = os.open(path, os.O_RDONLY)
    try:
        return file_stamp(fd)
    finally:
        os.close(fd)


def require_stamps(folder: Path) -> None:
    """Skip the test (fail it in CI) unless files in ``folder`` have stamps."""
    probe = folder / ".stamp-probe"
    probe.write_bytes(b"")
    try:
        if stamp_of_path(probe) is None:
            unavailable("the temporary folder's file system keeps no inode generations (no stamps there)")
    finally:
        probe.unlink()
