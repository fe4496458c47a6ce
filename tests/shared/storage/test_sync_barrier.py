"""SyncBarrier: group commit. A caller returns only after a flush that began after its call ended; callers that
arrive while a flush runs share the next one; a failed flush fails exactly the callers that waited for it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from shared.storage.sync_barrier import SyncBarrier


class SlowFlush:
    """A flush that takes ``seconds`` and records when each one began and ended."""

    def __init__(self, seconds: float, fail_on: set[int] | None = None) -> None:
        self.seconds = seconds
        self.fail_on = fail_on or set()
        self.flushes: list[tuple[float, float]] = []
        self.running = threading.Event()  # set once a first flush has begun

    def __call__(self) -> None:
        began = time.monotonic()
        self.running.set()
        time.sleep(self.seconds)
        self.flushes.append((began, time.monotonic()))
        if len(self.flushes) in self.fail_on:
            raise OSError(5, "Input/output error")


def test_the_real_flush_of_a_folder_works(tmp_path: Path) -> None:
    (tmp_path / "written").write_bytes(b"data")
    SyncBarrier(tmp_path).sync()
    SyncBarrier(tmp_path).sync()


def test_one_caller_gets_one_flush_that_began_after_its_call() -> None:
    flush = SlowFlush(0.01)
    barrier = SyncBarrier(Path("."), flush)
    called = time.monotonic()
    barrier.sync()
    assert len(flush.flushes) == 1 and flush.flushes[0][0] >= called


def test_callers_that_arrive_during_a_flush_share_the_next_one() -> None:
    flush = SlowFlush(1.0)  # long enough for eight threads to start on a loaded machine
    barrier = SyncBarrier(Path("."), flush)
    returned: dict[int, tuple[float, float]] = {}

    def call(number: int) -> None:
        called = time.monotonic()
        barrier.sync()
        returned[number] = (called, time.monotonic())

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert flush.running.wait(5)  # the first flush is running
    others = [threading.Thread(target=call, args=(number,)) for number in range(1, 9)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(5)

    assert len(flush.flushes) == 2  # nine callers, two flushes
    for called, done in returned.values():
        # every caller waited for a flush that began after it called and ended before it returned
        assert any(called <= began and ended <= done for began, ended in flush.flushes)


def test_a_failed_flush_fails_its_callers_and_the_next_one_succeeds() -> None:
    flush = SlowFlush(0.0, fail_on={1})
    barrier = SyncBarrier(Path("."), flush)
    with pytest.raises(OSError, match="Input/output error"):
        barrier.sync()
    barrier.sync()
    assert len(flush.flushes) == 2
