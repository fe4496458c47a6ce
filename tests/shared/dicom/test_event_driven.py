"""The DUL thread's wait: it ends when a primitive is queued for sending, and a queued primitive costs a wake-up
signal only while the DUL thread sleeps."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from shared.dicom import event_driven


@pytest.fixture
def dul() -> Iterator[Any]:
    """A DUL as the wait sees it: its socket (silent here) and its queue of primitives to send."""
    left, right = socket.socketpair()
    wakeup = event_driven._DulWakeup()
    outgoing = event_driven._NotifyingQueue(wakeup.notify)
    as_seen = SimpleNamespace(socket=SimpleNamespace(socket=left), to_provider_queue=outgoing)
    yield SimpleNamespace(to_provider_queue=outgoing, wakeup=wakeup, wait=event_driven._dul_waiter(as_seen, wakeup))
    os.close(wakeup.fd)
    left.close()
    right.close()


def signals_pending(fd: int) -> bool:
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        return False
    return True


def test_a_primitive_queued_while_the_dul_is_busy_costs_no_signal(dul: Any) -> None:
    dul.to_provider_queue.put("P-DATA")
    assert not signals_pending(dul.wakeup.fd)


def test_a_primitive_queued_before_the_wait_ends_it_at_once(dul: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_driven, "IDLE_WAIT_SECONDS", 60.0)
    dul.to_provider_queue.put("P-DATA")
    finished = threading.Event()
    waiter = threading.Thread(target=lambda: (dul.wait(), finished.set()), daemon=True)
    waiter.start()
    assert finished.wait(10), "the wait slept although a primitive was queued"
    assert not dul.wakeup.sleeping


def test_a_primitive_queued_during_the_wait_wakes_it(dul: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_driven, "IDLE_WAIT_SECONDS", 60.0)
    finished = threading.Event()
    waiter = threading.Thread(target=lambda: (dul.wait(), finished.set()), daemon=True)
    waiter.start()
    deadline = time.monotonic() + 10
    while not dul.wakeup.sleeping and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not finished.is_set()
    dul.to_provider_queue.put("P-DATA")
    assert finished.wait(10), "a primitive queued during the wait did not end it"
    assert queue.Queue.get(dul.to_provider_queue, block=False) == "P-DATA"
