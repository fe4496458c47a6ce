"""Input pynetdicom decodes but then fails on, in the DUL thread, aborts its association instead of killing it.

pynetdicom 3.0.4 decodes a received command set outside any error handling: a command set without Command Field
(found by tests/fuzz/test_pdus.py) raises inside the DUL thread, which dies and leaves the association hanging.
It also decodes an A-ASSOCIATE-RQ whose values its state machine then refuses when it builds the request's
primitive (an even presentation context ID, found by the same test), again inside the DUL thread. Such input is
treated as pynetdicom treats an invalid PDU it does catch: event 19, which the state machine answers with A-ABORT
(PS3.8 AA-1, AA-8). ``guard_association_requests`` builds the primitive where the PDU is decoded, which both read
paths (shared.dicom.pdu_reading's and pynetdicom's own, kept for TLS) wrap in that handling, and hands it to the
state machine, which would otherwise build it a second time. A request received before in the same bytes is not
decoded again (``_DecodedRequests``).
"""

from __future__ import annotations

import copy
import logging
import threading
from typing import Any

from pynetdicom import evt
from pynetdicom.pdu import A_ASSOCIATE_RQ

log = logging.getLogger(__name__)

INVALID_PDU_EVENT = "Evt19"
ASSOCIATION_REQUEST = b"\x01"  # PDU type of an A-ASSOCIATE-RQ
ASSOCIATION_REQUEST_EVENT = "Evt6"
REMEMBERED_REQUESTS = 64


def guard_dimse_decoding(assoc: Any) -> None:
    dimse = assoc.dimse
    receive = dimse.receive_primitive

    def receive_or_abort(primitive: Any) -> None:
        try:
            receive(primitive)
        except Exception as exc:
            log.warning("scp.dimse_undecodable error=%s remote=%s", exc.__class__.__name__,
                        getattr(assoc.requestor, "address", "?"))
            dimse.message = None
            assoc.dul.event_queue.put(INVALID_PDU_EVENT)

    dimse.receive_primitive = receive_or_abort


class _DecodedRequests:
    """A-ASSOCIATE-RQ PDUs decoded before, by their bytes: a modality sends the same request every time (dcmtk's
    storescu sending one file: 128 contexts, ~1 ms to decode even with shared.dicom.uid_memo). Each association gets
    a copy of its own; the PDU's items are only read (its primitive is built anew from them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pdus: dict[bytes, A_ASSOCIATE_RQ] = {}

    def copy_of(self, encoded: bytes) -> A_ASSOCIATE_RQ | None:
        with self._lock:
            known = self._pdus.get(encoded)
        return copy.copy(known) if known is not None else None

    def remember(self, encoded: bytes, pdu: A_ASSOCIATE_RQ) -> None:
        with self._lock:
            if len(self._pdus) >= REMEMBERED_REQUESTS:
                self._pdus.clear()
            self._pdus[encoded] = copy.copy(pdu)


_decoded_requests = _DecodedRequests()


def guard_association_requests(assoc: Any) -> None:
    dul = assoc.dul
    decode = dul._decode_pdu

    def decode_whole(bytestream: bytearray) -> Any:
        if bytestream[:1] != ASSOCIATION_REQUEST:
            return decode(bytestream)
        encoded = bytes(bytestream)
        known = _decoded_requests.copy_of(encoded)
        if known is not None:  # what pynetdicom's _decode_pdu does, but the decoding
            evt.trigger(assoc, evt.EVT_DATA_RECV, {"data": encoded})
            evt.trigger(assoc, evt.EVT_PDU_RECV, {"pdu": known})
            _hand_over(known, known.to_primitive())
            return known, ASSOCIATION_REQUEST_EVENT
        pdu, event = decode(encoded)
        primitive = pdu.to_primitive()  # raises here, where a failed decoding is an invalid PDU
        _decoded_requests.remember(encoded, pdu)  # before the hand-over, which is this association's
        _hand_over(pdu, primitive)
        return pdu, event

    dul._decode_pdu = decode_whole


def _hand_over(pdu: A_ASSOCIATE_RQ, primitive: Any) -> None:
    """The state machine's own ``to_primitive`` (AE-6) gets the primitive built here instead of building it again
    (an A-ASSOCIATE-RQ of 128 presentation contexts: ~10 % of the association's time in the SCP, py-spy); a later
    call builds a new one, as pynetdicom's does."""

    def built_already() -> Any:
        del pdu.to_primitive  # type: ignore[method-assign]
        return primitive

    pdu.to_primitive = built_already  # type: ignore[method-assign]
