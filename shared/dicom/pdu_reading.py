"""An association's DUL thread reads its PDUs as pynetdicom does, offering each P-DATA-TF of an established
association to a handler of ours first (services.scp.direct_store, shared.dicom.direct_responses).

What the handler takes never becomes pynetdicom PDU, primitive or state-machine work; what it gives back (a
whole P-DATA-TF PDU) is decoded by pynetdicom as if it had just arrived. Every failure raises the event
pynetdicom's own ``DULServiceProvider._read_pdu_data`` raises for it.

pynetdicom's association thread queues the A-ASSOCIATE-AC, runs the EVT_ACCEPTED handlers and only then marks the
association established; the peer may send its first request as soon as the AC arrives, and on a loaded machine
the DUL thread reads it before that mark. pynetdicom's own path waits for it (the association thread handles the
message); ours would have taken the request for one of an association that is not established, left it to
pynetdicom and lost track of the message (a request that broke the message structure then got no A-ABORT). So the
first P-DATA-TF waits until the association is established, at most ESTABLISHING_SECONDS, then aborts.
"""

from __future__ import annotations

import struct
import time
from typing import Any, Protocol

P_DATA_TF = 0x04
ESTABLISHED = "Sta6"
TRANSPORT_CLOSED = "Evt17"
INVALID_PDU = "Evt19"  # the state machine answers it with A-ABORT (PS3.8 AA-8)
PDU_HEADER = struct.Struct(">BBL")  # PDU type, reserved, PDU length
KNOWN_PDU_TYPES = frozenset(range(0x01, 0x08))
ESTABLISHING_SECONDS = 5.0
_ESTABLISHING_POLL_SECONDS = 0.0005


class ProtocolViolation(Exception):
    """The peer broke the message structure where a handler was reading a message of its own."""


class PDataHandler(Protocol):
    def on_p_data(self, body: bytearray) -> bytes | None:
        """Take what is ours; return a P-DATA-TF PDU of the rest for pynetdicom, or None. ProtocolViolation
        aborts the association."""
        ...

    def on_other_pdu(self) -> None:
        """A release, an abort or an association PDU arrived: a message being read will never complete."""
        ...


def read_p_data_first(assoc: Any, handler: PDataHandler) -> None:
    """From now on the association's DUL thread offers P-DATA-TF PDUs to ``handler`` before pynetdicom."""
    dul = assoc.dul
    dul._read_pdu_data = lambda: _read_pdu_data(dul, handler)


def _read_pdu_data(dul: Any, handler: PDataHandler) -> None:
    sock = dul.socket
    try:
        header = bytes(sock.recv(6))
    except (OSError, TimeoutError):
        dul.event_queue.put(TRANSPORT_CLOSED)
        return
    if len(header) != 6:
        dul.event_queue.put(TRANSPORT_CLOSED)
        return
    pdu_type, _, length = PDU_HEADER.unpack(header)
    if pdu_type not in KNOWN_PDU_TYPES:
        dul.event_queue.put(INVALID_PDU)
        return
    try:
        body = sock.recv(length)
    except (OSError, TimeoutError):
        dul.event_queue.put(TRANSPORT_CLOSED)
        return
    if len(body) != length:
        dul.event_queue.put(TRANSPORT_CLOSED)
        return
    if pdu_type == P_DATA_TF and dul.state_machine.current_state == ESTABLISHED:
        if not _established(dul.assoc):
            dul.event_queue.put(INVALID_PDU)
            return
        try:
            pdu = handler.on_p_data(body)
        except ProtocolViolation:
            dul.event_queue.put(INVALID_PDU)
            return
        if pdu is None:
            return
    else:
        handler.on_other_pdu()
        pdu = header + bytes(body)
    queue_for_pynetdicom(dul, pdu)


def _established(assoc: Any) -> bool:
    """Whether the association thread marked the association established (waiting for it if it is about to)."""
    if assoc.is_established:
        return True
    deadline = time.monotonic() + ESTABLISHING_SECONDS
    while not assoc.is_established:
        if assoc.is_aborted or assoc.is_released or time.monotonic() > deadline:
            return False
        time.sleep(_ESTABLISHING_POLL_SECONDS)
    return True


def queue_for_pynetdicom(dul: Any, pdu: bytes | bytearray) -> None:
    """A whole PDU, decoded and queued for the state machine as pynetdicom's own reading would."""
    try:
        decoded, event = dul._decode_pdu(bytearray(pdu))
    except Exception:
        dul.event_queue.put(INVALID_PDU)
        return
    dul.event_queue.put(event)
    dul._recv_pdu.put(decoded)
