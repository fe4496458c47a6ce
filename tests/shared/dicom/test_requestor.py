"""A requestor association's own thread never takes a response meant for the thread that sent the request, and a
rejection is read even when pynetdicom reports the association aborted."""

from __future__ import annotations

import queue
import threading
import types
from typing import Any

from pynetdicom.pdu_primitives import A_ASSOCIATE, A_P_ABORT

from shared.dicom.requestor import keep_reactor_off_responses, rejection_of, send_without_waiting_for_the_reactor


class QueuedMessages:
    def __init__(self, *messages: Any) -> None:
        self._messages: queue.Queue[Any] = queue.Queue()
        for message in messages:
            self._messages.put(message)

    def get_msg(self, block: bool = False) -> Any:
        try:
            return self._messages.get(block=block, timeout=1 if block else None)
        except queue.Empty:
            return None, None


class AssociationThread(threading.Thread):
    """Stands in for pynetdicom's Association: a thread whose run() polls its DIMSE queue, as the reactor does."""

    def __init__(self, dimse: QueuedMessages) -> None:
        super().__init__()
        self.dimse = dimse
        self.taken_by_reactor: Any = "not run"

    def run(self) -> None:
        self.taken_by_reactor = self.dimse.get_msg(block=False)


def test_the_association_thread_finds_nothing_and_the_sender_gets_the_response() -> None:
    association = AssociationThread(QueuedMessages((1, "C-STORE-RSP")))
    keep_reactor_off_responses(association)
    association.start()
    association.join()
    assert association.taken_by_reactor == (None, None)
    assert association.dimse.get_msg(block=True) == (1, "C-STORE-RSP")


def test_guarding_twice_keeps_one_guard() -> None:
    association = AssociationThread(QueuedMessages((1, "first"), (1, "second")))
    keep_reactor_off_responses(association)
    guarded = association.dimse.get_msg
    keep_reactor_off_responses(association)
    assert association.dimse.get_msg is guarded
    assert association.dimse.get_msg() == (1, "first")


def test_an_unguarded_association_thread_takes_the_response() -> None:
    """Why the guard exists: without it the association thread can win the race for the response."""
    association = AssociationThread(QueuedMessages((1, "C-STORE-RSP")))
    association.start()
    association.join()
    assert association.taken_by_reactor == (1, "C-STORE-RSP")


class PausingAssociation(AssociationThread):
    """pynetdicom's association sets ``_is_paused`` from its own thread; send_* spin until it reads True."""

    _is_paused = False


def test_requests_go_out_without_waiting_for_the_association_thread_to_pause() -> None:
    association = PausingAssociation(QueuedMessages((1, "C-STORE-RSP")))
    send_without_waiting_for_the_reactor(association)
    association._is_paused = False  # what the association thread writes when it resumes
    assert association._is_paused is True
    association.start()
    association.join()
    assert association.taken_by_reactor == (None, None)  # and it still never takes a response
    unpaused = type(association)
    send_without_waiting_for_the_reactor(association)  # idempotent
    assert type(association) is unpaused


def rejected_association(answer: Any, delivered: bool) -> Any:
    """A requestor association after its request: ``delivered`` = pynetdicom's ACSE took ``answer`` off the DUL."""
    left_on_the_queue: queue.Queue[Any] = queue.Queue()
    if not delivered:
        left_on_the_queue.put(answer)
    return types.SimpleNamespace(acceptor=types.SimpleNamespace(primitive=answer if delivered else None),
                                 is_established=False, dul=types.SimpleNamespace(to_user_queue=left_on_the_queue))


def rejection(result: int, source: int, diagnostic: int) -> A_ASSOCIATE:
    primitive = A_ASSOCIATE()
    primitive.result, primitive.result_source, primitive.diagnostic = result, source, diagnostic
    return primitive


def test_a_rejection_is_read_whether_or_not_pynetdicom_delivered_it() -> None:
    assert rejection_of(rejected_association(rejection(1, 1, 7), delivered=True)) == (1, 1, 7)
    # The DUL thread took the RJ and closed the connection before the requesting thread saw the socket connected:
    # pynetdicom reports an abort and leaves the RJ on the DUL's queue.
    assert rejection_of(rejected_association(rejection(2, 3, 2), delivered=False)) == (2, 3, 2)


def test_an_abort_or_an_acceptance_is_no_rejection() -> None:
    assert rejection_of(rejected_association(A_P_ABORT(), delivered=False)) is None
    assert rejection_of(rejected_association(rejection(0, 1, 1), delivered=True)) is None
