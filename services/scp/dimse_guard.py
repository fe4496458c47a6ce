"""Input pynetdicom decodes but then fails on, in the DUL thread, aborts its association instead of killing it.

pynetdicom 3.0.4 decodes a received command set outside any error handling: a command set without Command Field
(found by tests/fuzz/test_pdus.py) raises inside the DUL thread, which dies and leaves the association hanging.
It also decodes an A-ASSOCIATE-RQ whose values its state machine then refuses when it builds the request's
primitive (an even presentation context ID, found by the same test), again inside the DUL thread. Such input is
treated as pynetdicom treats an invalid PDU it does catch: event 19, which the state machine answers with A-ABORT
(PS3.8 AA-1, AA-8). ``guard_association_requests`` builds the primitive where the PDU is decoded, which both read
paths (shared.dicom.pdu_reading's and pynetdicom's own, kept for TLS) wrap in that handling, and hands it to the
state machine, which would otherwise build it a second time.
"""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom.pdu import A_ASSOCIATE_RQ

log = logging.getLogger(__name__)

INVALID_PDU_EVENT = "Evt19"


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


def guard_association_requests(assoc: Any) -> None:
    dul = assoc.dul
    decode = dul._decode_pdu

    def decode_whole(bytestream: bytearray) -> Any:
        pdu, event = decode(bytestream)
        if isinstance(pdu, A_ASSOCIATE_RQ):
            primitive = pdu.to_primitive()  # raises here, where a failed decoding is an invalid PDU
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
