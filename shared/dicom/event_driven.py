"""Event-driven waits for pynetdicom's reactors (PERFORMANCE.md, "pynetdicom polls").

pynetdicom's DUL thread and association thread each sleep 1 ms whenever they find nothing to do, and several
such sleeps fall on every C-STORE round trip. For the listener's associations (``make_event_driven``) and the
associations a process requests once it called ``event_driven_requestors`` (the mover), those sleeps become waits
that end as soon as there is work: the DUL thread waits on its socket and on a wake-up descriptor signalled when a
primitive is queued for sending; the association thread waits on an event signalled when a DIMSE message or an
ACSE primitive (release, abort) arrives. Both still wake every IDLE_WAIT_SECONDS to check timers and kill flags.

Only threads that carry a ``_pacs_wait`` attribute are affected; every other use of pynetdicom keeps its plain
sleeps.
"""

from __future__ import annotations

import os
import queue
import select
import threading
import time
import weakref
from typing import Any

import pynetdicom.ae
import pynetdicom.association
import pynetdicom.dul

from shared.dicom.tcp import quickack

IDLE_WAIT_SECONDS = 0.02
POLLING_SLEEP_MAX_SECONDS = 0.002  # pynetdicom's polling sleeps are 1 ms; longer sleeps are left alone


class _NotifyingQueue(queue.Queue):  # type: ignore[type-arg]
    def __init__(self, notify: Any) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._notify()


class _WaitingTime:
    """Stands in for the ``time`` module inside pynetdicom's association and DUL modules."""

    def sleep(self, seconds: float) -> None:
        wait = getattr(threading.current_thread(), "_pacs_wait", None)
        if wait is not None and seconds <= POLLING_SLEEP_MAX_SECONDS:
            wait()
        else:
            time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def install() -> None:
    """Route pynetdicom's polling sleeps through the per-thread waits (idempotent)."""
    if not isinstance(pynetdicom.association.time, _WaitingTime):
        pynetdicom.association.time = _WaitingTime()  # type: ignore[assignment]
        pynetdicom.dul.time = _WaitingTime()  # type: ignore[assignment]


def _association_waiter(activity: threading.Event) -> Any:
    def wait() -> None:
        activity.wait(IDLE_WAIT_SECONDS)
        activity.clear()  # the reactor checks its queues right after this returns

    return wait


class _DulWakeup:
    """Wakes the DUL thread when a primitive is queued for sending, with a system call only if it sleeps.

    A C-STORE of a large instance queues one primitive per PDU; signalling each of them cost a write on the
    eventfd and a GIL hand-off to a DUL thread that was busy sending anyway (py-spy: ~19 % of a C-GET's thread).
    The DUL announces its sleep, then looks at its queue once more before it sleeps: a primitive queued before
    the announcement is found by that look, one queued after it finds the announcement and signals.
    """

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.sleeping = False

    def notify(self) -> None:
        if self.sleeping:
            os.eventfd_write(self.fd, 1)


def _dul_waiter(dul: Any, wakeup: _DulWakeup) -> Any:
    def wait() -> None:
        if getattr(dul.socket, "buffered", 0):
            return  # read ahead already: nothing to wait for
        # A socket held by its sending thread (shared.dicom.own_responses) is that thread's to watch.
        sock = None if getattr(dul, "_pacs_socket_held", False) else getattr(dul.socket, "socket", None)
        saw_readable = None
        # poll, not select: select refuses descriptors above 1023, which a busy listener reaches (and each refusal
        # would turn this wait into a busy loop).
        poller = select.poll()
        poller.register(wakeup.fd, select.POLLIN)
        if sock is not None and sock.fileno() >= 0:
            pending = getattr(sock, "pending", None)  # TLS may hold decrypted bytes poll cannot see
            if pending is not None and pending():
                return
            # The ACK for what arrives while we wait is decided on arrival: quick-ACK mode must be on now.
            quickack(sock)
            poller.register(sock, select.POLLIN)
            saw_readable = getattr(dul.socket, "saw_readable", None)
        wakeup.sleeping = True
        try:
            if not dul.to_provider_queue.empty():
                return  # queued before the sleep was announced: nobody will signal it
            ready = poller.poll(IDLE_WAIT_SECONDS * 1000)
        except (OSError, ValueError):
            return  # the socket was closed meanwhile: let the reactor notice
        finally:
            wakeup.sleeping = False
        for fd, _ in ready:
            if fd == wakeup.fd:
                try:
                    os.eventfd_read(wakeup.fd)
                except BlockingIOError:
                    pass
            elif saw_readable is not None:
                saw_readable()  # the reactor's readiness check need not poll again (services.scp.sockets)

    return wait


def make_event_driven(association: Any) -> None:
    """Give a freshly created (not yet started) association event-driven waits."""
    install()
    activity = threading.Event()
    association._pacs_wait = _association_waiter(activity)
    association.dimse.msg_queue = _NotifyingQueue(activity.set)
    dul = association.dul
    dul.to_user_queue = _NotifyingQueue(activity.set)
    wakeup = _DulWakeup()
    weakref.finalize(dul, os.close, wakeup.fd)
    dul.to_provider_queue = _NotifyingQueue(wakeup.notify)
    dul._pacs_wait = _dul_waiter(dul, wakeup)
    dul._pacs_wakeup = wakeup


def wake_dul(dul: Any) -> None:
    """End the DUL thread's current wait (it then watches its socket again if that is no longer held)."""
    wakeup: _DulWakeup | None = getattr(dul, "_pacs_wakeup", None)
    if wakeup is not None:
        wakeup.notify()


class _EventDrivenRequestor(pynetdicom.association.Association):
    def __init__(self, ae: Any, mode: Any) -> None:
        super().__init__(ae, mode)
        make_event_driven(self)


def event_driven_requestors() -> None:
    """Associations that ``AE.associate`` creates in this process from now on wait on events too (idempotent)."""
    pynetdicom.ae.Association = _EventDrivenRequestor  # type: ignore[misc]
