"""Whole buffers written to a file descriptor at an offset, however short the system's writes come back."""

from __future__ import annotations

import os
from collections.abc import Iterable


def write_at(fd: int, parts: Iterable[bytes | memoryview], offset: int) -> int:
    """Write ``parts`` one after another from ``offset`` (``pwritev``, again for what a short write left); return the
    offset after them. Raises OSError as the system call does (a full disk: what was written stays written)."""
    views = [memoryview(part) for part in parts if len(part)]
    while views:
        written = os.pwritev(fd, views, offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]
    return offset
