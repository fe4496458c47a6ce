"""Bounds on what one incoming PDU may cost: its length and the time it takes to arrive (PS3.8 9.3, 9.7).

A P-DATA-TF PDU longer than the maximum length the node advertised, or any other PDU longer than
OTHER_PDU_LIMIT, is refused as soon as its header is read: the node sends A-ABORT (source: service provider,
reason 6: invalid PDU parameter value) and drops the connection, before reading (or buffering) the body. A
PDU header and its body must each arrive within ``pdu_seconds`` once their first byte is there, so that a peer
that stops mid-PDU, or drips one byte at a time, cannot hold a connection and its thread forever.
"""

from __future__ import annotations

import logging
import socket
import struct
from dataclasses import dataclass

log = logging.getLogger(__name__)

P_DATA_TF = 0x04
OTHER_PDU_LIMIT = 1 << 20  # association requests, releases, aborts: far below this
UNLIMITED_P_DATA_LIMIT = 256 << 20  # when the node advertises "no maximum" (max_pdu_size 0)
A_ABORT_INVALID_PDU_PARAMETER = struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 2, 6)


class PduRefused(OSError):
    """The peer sent a PDU the node does not accept; the connection is being dropped."""


@dataclass(frozen=True)
class PduLimits:
    max_p_data_length: int  # the maximum length the node advertises (0: none, then UNLIMITED_P_DATA_LIMIT)
    pdu_seconds: float  # most time a PDU header, then its body, may take to arrive

    def limit_for(self, pdu_type: int) -> int:
        if pdu_type == P_DATA_TF:
            return self.max_p_data_length or UNLIMITED_P_DATA_LIMIT
        return OTHER_PDU_LIMIT


KNOWN_PDU_TYPES = frozenset(range(0x01, 0x08))


def check_header(header: bytes, limits: PduLimits, sock: socket.socket) -> bool:
    """Whether pynetdicom reads a body next (a complete header of a known type); refuse (A-ABORT, then
    PduRefused) a PDU whose announced length exceeds its limit."""
    if len(header) != 6:
        return False  # a closed connection: pynetdicom handles the short read
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type not in KNOWN_PDU_TYPES:
        return False  # pynetdicom reports an unrecognised PDU without reading its body
    limit = limits.limit_for(pdu_type)
    if length <= limit:
        return True
    log.warning("scp.pdu_refused pdu_type=0x%02X length=%d limit=%d remote=%s", pdu_type, length, limit,
                _remote(sock))
    try:
        sock.sendall(A_ABORT_INVALID_PDU_PARAMETER)
    except OSError:
        pass
    raise PduRefused(f"PDU of {length} bytes, more than the {limit} accepted")


def _remote(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "?"
