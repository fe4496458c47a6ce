"""Signals of a service process: the first SIGTERM/SIGINT asks for a clean stop, a second one stops at once.

Stopping at once loses nothing acknowledged: every Success was sent after the object was durable.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

FORCED_EXIT_CODE = 1


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
        return self._event.wait(timeout)

    def set(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()
