"""Names for temporary and spare files that no other process or thread picks: a random token drawn once per process
(again in a forked child) and a counter.

``uuid.uuid4()`` asks the kernel for 16 random bytes (a ``getrandom`` system call) every time; the ingest path
named one temporary file per instance with it. Only uniqueness matters for these names, which the token (64 random
bits per process) and the counter give without a system call.
"""

from __future__ import annotations

import itertools
import os


def _new_token() -> str:
    return os.urandom(8).hex()


_token = _new_token()
_counter = itertools.count()


def _after_fork() -> None:
    global _token, _counter
    _token, _counter = _new_token(), itertools.count()


os.register_at_fork(after_in_child=_after_fork)


def unique_name() -> str:
    """A name no other call returns, in any process (``next`` on a counter is atomic under the GIL)."""
    return f"{_token}{next(_counter):x}"
