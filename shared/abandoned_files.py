"""Temporary files that a writer which ended uncleanly left behind: removed at the next start, once old enough.

Writers here put a file's content under a temporary name and then rename it into place (object-store markers taken
from spare files, the embedded queue's messages and exchange tables). A process killed in between leaves the
temporary file, which every reader skips, forever. At a start such files are removed once their last change (a
rename, which taking a spare file is, counts) is ABANDONED_SECONDS old: a live writer renames its file within
milliseconds, so another process's write in progress is never taken for abandoned.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

ABANDONED_SECONDS = 60.0


def remove_abandoned(folder: str, is_temporary: Callable[[str], bool]) -> int:
    """Remove the files of ``folder`` (not below it) whose name ``is_temporary`` and whose last change is
    ABANDONED_SECONDS old; the number removed. A missing folder has none."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    oldest_kept = time.time() - ABANDONED_SECONDS
    removed = 0
    for entry in entries:
        if not is_temporary(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_ctime < oldest_kept:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed
