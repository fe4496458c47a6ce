"""A peer's A-RELEASE-RQ answered by the DUL thread that read it, when nothing of the association is outstanding.

pynetdicom's DUL thread turns the A-RELEASE-RQ into an indication for the association thread, which queues the
A-RELEASE response for the DUL thread, which sends the A-RELEASE-RP: two hand-offs between threads (and the GIL)
while the peer waits, ~1.1 ms from the request read to the RP sent (probed, session 20). Every association ends
this way: a workstation's C-FIND, a monitoring C-ECHO, a modality that opens one association per image.

Here, once the DUL thread has handled the A-RELEASE-RQ of an association we accepted (Sta6 + Evt12 → Sta8), it
queues the response itself if no request is waiting for the association thread or being served by it: its next
turn sends the RP (AR-4, Sta13), as pynetdicom would. The indication stays queued, so the association thread still
finishes the association as before (``is_released``, EVT_RELEASED, its threads stopped); its own response is then
not queued again (a second A-RELEASE response in Sta13 is an invalid transition of the state machine).

A request taken by the association thread is counted from the moment it leaves the DIMSE queue until
``_serve_request`` returned, under the lock the DUL thread looks under: every response of a request the peer sent
before its A-RELEASE-RQ is written before the RP (PS3.8 9.1.6: nothing follows the A-RELEASE-RP). When something
is outstanding, pynetdicom's own order applies (the reactor answers the release after serving it).
"""

from __future__ import annotations

import threading
from typing import Any

RELEASE_REQUESTED = "Evt12"  # A-RELEASE-RQ PDU received (PS3.8 9.2)
AWAITING_LOCAL_RELEASE_RESPONSE = "Sta8"


class _Outstanding:
    """Requests taken from the DIMSE queue by the association thread and not yet served."""

    def __init__(self, messages: Any) -> None:
        self.lock = threading.Lock()
        self.taken = 0
        self._messages = messages  # the DIMSE queue (the DUL thread puts, the association thread takes)

    def nothing(self) -> bool:
        with self.lock:
            return self.taken == 0 and self._messages.empty()


def answer_release_in_dul_thread(assoc: Any) -> None:
    """Install the early release answer on a freshly created acceptor association (after its request routing)."""
    dimse, dul, acse = assoc.dimse, assoc.dul, assoc.acse
    outstanding = _Outstanding(dimse.msg_queue)
    get_message = dimse.get_msg
    serve_request = assoc._serve_request
    act = dul.state_machine.do_action
    send_release = acse.send_release

    def get_msg(block: bool = False) -> Any:
        if block:  # only a service waiting for its own messages blocks: it is being served, so counted already
            return get_message(block)
        with outstanding.lock:
            item = get_message(False)
            if item[1] is not None:
                outstanding.taken += 1
        return item

    def serve(message: Any, context_id: int) -> None:
        try:
            serve_request(message, context_id)
        finally:
            with outstanding.lock:
                outstanding.taken = max(0, outstanding.taken - 1)

    claim_lock = threading.Lock()
    claimed = False

    def claim() -> bool:
        """Whether the caller is the one to queue the A-RELEASE response (the DUL thread or the association
        thread, whichever comes first; the other queues nothing)."""
        nonlocal claimed
        with claim_lock:
            first, claimed = not claimed, True
            return first

    def do_action(event: str) -> None:
        act(event)
        if (event == RELEASE_REQUESTED and dul.state_machine.current_state == AWAITING_LOCAL_RELEASE_RESPONSE
                and assoc.is_acceptor and outstanding.nothing() and claim()):
            send_release(is_response=True)  # queued for this thread's next turn, which sends the RP

    def release(is_response: bool = False) -> None:
        if not is_response or claim():
            send_release(is_response)
        else:
            assoc._sent_release = True  # as send_release records it

    dimse.get_msg = get_msg
    assoc._serve_request = serve
    dul.state_machine.do_action = do_action
    acse.send_release = release
