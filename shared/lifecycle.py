"""Signals of a service process: the first SIGTERM/SIGINT asks for a clean stop, a second one stops at once.

Stopping at once loses nothing acknowledged: every Success was sent after the object was durable.

Python runs a signal's handler in the main thread, but the kernel may deliver the signal to any other thread: to
one of them whenever the main thread has it blocked, which glibc does for the few microseconds of every
``pthread_create``. The other thread only marks the signal as tripped; a main thread that then sleeps in a lock
with no timeout (``Event.wait()``) never takes the GIL again, never sees the mark and never stops (measured: 3 of
20 `pacs serve` stops right after the node was ready, an SCP child SIGKILLed by the supervisor after 14 s). So the
main thread waits in slices: each wake-up takes the GIL, which makes it run a handler another thread left pending.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType

log = logging.getLogger(__name__)

FORCED_EXIT_CODE = 1
WAIT_SLICE_SECONDS = 0.25  # the longest a signal delivered to another thread than the main one waits for its handler


class StopRequest:
    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> "StopRequest":
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._event.is_set():
            log.warning("lifecycle.forced_stop signal=%s", signal.Signals(signum).name)
            os._exit(FORCED_EXIT_CODE)
        log.info("lifecycle.stopping signal=%s", signal.Signals(signum).name)
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once a stop was asked for; False if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = WAIT_SLICE_SECONDS if deadline is None else min(WAIT_SLICE_SECONDS,
                                                                        deadline - time.monotonic())
            if self._event.wait(max(0.0, remaining)):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def set(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()
