"""Requestor associations that only send requests: keep pynetdicom's association thread off their responses."""

from __future__ import annotations

import queue
import threading
from typing import Any

from pynetdicom.pdu_primitives import A_ASSOCIATE

Rejection = tuple[int, int, int]


def rejection_of(association: Any) -> Rejection | None:
    """The (result, source, diagnostic) of the A-ASSOCIATE-RJ a requestor association got, else None.

    pynetdicom can miss a rejection it received: its DUL thread takes the RJ and closes the connection, and when
    that happens before the requesting thread checks that the socket connected, the association is reported
    aborted with the RJ left unread on the DUL's queue (measured: 15 of 450 rejected requests on a loaded
    2-core machine). The RJ is taken from there in that case.
    """
    primitive = association.acceptor.primitive
    if primitive is None and not association.is_established:
        try:
            while primitive is None:
                item = association.dul.to_user_queue.get(block=False)
                if isinstance(item, A_ASSOCIATE):
                    primitive = item
        except queue.Empty:
            pass
    if primitive is None or primitive.result not in (0x01, 0x02):
        return None
    return int(primitive.result), int(primitive.result_source), int(primitive.diagnostic)


def keep_reactor_off_responses(association: Any) -> None:
    """Let only the sending thread take DIMSE messages off a requestor association's queue.

    pynetdicom's association thread takes any message it finds on the queue between two requests. send_c_store
    (and every other send_*) pauses it first, but the pause can be observed as done just before the thread
    resumes, and a thread delayed there (a loaded machine) takes the response meant for send_*, drops it as
    "unexpected", and the caller waits out the DIMSE timeout. Measured with bench/retrieve.py on the shared 2-core
    machine: 4 of 18 C-MOVEs of 500 instances lost a response that way; CI lost a C-STORE response in a test client.
    An association that serves no requests of its own never needs its thread to read that queue.
    """
    if getattr(association.dimse, "reactor_kept_off", False):
        return
    take = association.dimse.get_msg

    def get_msg(block: bool = False) -> Any:
        if threading.current_thread() is association:
            return None, None
        return take(block)

    association.dimse.get_msg = get_msg
    association.dimse.reactor_kept_off = True


class _NeverWaitsForTheReactor:
    """Mixed into a guarded association's class: send_* no longer waits for the association thread to pause
    (pynetdicom's send_* spin until that thread, which sleeps 1 ms per loop, reports itself paused: up to 1 ms per
    request). The pause only existed to keep that thread off the response, which the guard already does."""

    @property
    def _is_paused(self) -> bool:
        return True

    @_is_paused.setter
    def _is_paused(self, _value: bool) -> None:
        pass


def send_without_waiting_for_the_reactor(association: Any) -> None:
    """For an association guarded by keep_reactor_off_responses: requests go out without the pause handshake."""
    keep_reactor_off_responses(association)
    cls = association.__class__
    if not issubclass(cls, _NeverWaitsForTheReactor):
        association.__class__ = type(f"Unpaused{cls.__name__}", (_NeverWaitsForTheReactor, cls), {})
