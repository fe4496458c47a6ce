"""An undecodable DIMSE command aborts its association instead of killing pynetdicom's DUL thread.

pynetdicom 3.0.4 decodes a received command set outside any error handling: a command set without Command Field
(found by tests/fuzz/test_pdus.py) raises inside the DUL thread, which dies and leaves the association hanging.
Such input is treated as pynetdicom treats an invalid DIMSE message it does catch: event 19 (invalid PDU), which
the state machine answers with A-ABORT (PS3.8 AA-8).
"""

from __future__ import annotations

import logging
from typing import Any

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
