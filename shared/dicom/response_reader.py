"""The response to our own C-STORE request, read by the thread that sent the request.

After ``shared.dicom.message_writer`` writes a C-STORE request, pynetdicom's DUL thread would wake on the
response, decode the PDU into objects, decode the command set with pydicom, and hand the message over a queue to
the waiting thread: about 0.4 ms per sub-operation, a third of a C-MOVE's time per instance to a fast peer.
Here, for the length of one exchange, the DUL thread is kept off the socket and the sending thread reads the
P-DATA-TF PDU(s) of the response itself (PS3.8 9.3.5) and takes Command Field, Message ID Being Responded To and
Status from the command set (Implicit VR Little Endian, PS3.7 6.3.1). Anything else the peer sends instead (an
A-ABORT, an A-RELEASE-RQ) is handed back to the DUL thread unread, which handles it as it always does; a
response that is not the expected one aborts the association.

For requestor associations that only send C-STORE requests on plain TCP (the mover): the writer must be installed.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pynetdicom.transport import AssociationSocket

P_DATA_TF = 0x04
C_STORE_RSP = 0x8001
COMMAND_FIELD, MESSAGE_ID_RESPONDED_TO, STATUS = 0x0100, 0x0120, 0x0900
MAX_RESPONSE_PDU = 1 << 20  # a C-STORE response is a command set of ~100 bytes
_ATTRIBUTE = "_pacs_response_reader"


class UnexpectedResponse(Exception):
    """The peer answered something else than the response to our request."""


class HandedBackSocket(AssociationSocket):
    """pynetdicom's socket, which the DUL thread leaves alone while ``paused``, and which gives it first the bytes
    an exchange read but did not want."""

    paused = False
    handed_back = b""

    @property
    def ready(self) -> bool:
        if self.handed_back:
            return True
        if self.paused:
            return False
        return bool(super().ready)

    def recv(self, nr_bytes: int) -> bytearray:
        if not self.handed_back:
            return super().recv(nr_bytes)
        taken, self.handed_back = self.handed_back[:nr_bytes], self.handed_back[nr_bytes:]
        received = bytearray(taken)
        if len(received) < nr_bytes:
            received += super().recv(nr_bytes - len(received))
        return received


class ResponseReader:
    def __init__(self, association: Any) -> None:
        self._association = association
        self._socket: HandedBackSocket = association.dul.socket

    @contextmanager
    def exchange(self) -> Iterator[None]:
        """Keep the DUL thread off the socket from before the request is written until its response is read."""
        self._socket.paused = True
        try:
            yield
        finally:
            self._socket.paused = False

    def store_status(self, message_id: int) -> int | None:
        """The status of the C-STORE response to ``message_id``; None (the association aborted, or ending) without
        one."""
        deadline = time.monotonic() + float(self._association.dimse_timeout or 30)
        command = bytearray()
        try:
            while True:
                header = self._read(6, deadline)
                pdu_type, length = header[0], int.from_bytes(header[2:6], "big")
                if pdu_type != P_DATA_TF or length > MAX_RESPONSE_PDU:
                    if pdu_type != P_DATA_TF and length <= MAX_RESPONSE_PDU:
                        self._socket.handed_back = header + self._read(length, deadline)
                        return None  # the DUL thread reads it next (an abort or a release request)
                    raise UnexpectedResponse(f"PDU type {pdu_type:#04x} of {length} bytes")
                body = self._read(length, deadline)
                self._association.dul._idle_timer.restart()  # as the DUL does for every PDU it reads
                if _take_command(body, command):
                    return _status_of(bytes(command), message_id)
        except (UnexpectedResponse, TimeoutError, ConnectionError, OSError):
            self._socket.paused = False  # an abort waits for the DUL thread to see the connection close
            self._association.abort()
            return None

    def _read(self, count: int, deadline: float) -> bytes:
        sock: socket.socket = self._socket.socket  # type: ignore[assignment]
        received = bytearray()
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while len(received) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no response within the DIMSE timeout")
            if not poller.poll(remaining * 1000):
                continue
            chunk = sock.recv(count - len(received))
            if not chunk:
                raise ConnectionError("the peer closed the connection")
            received += chunk
        return bytes(received)


def _take_command(body: bytes, command: bytearray) -> bool:
    """Append the command fragments of a P-DATA-TF body to ``command``; True once the last one is there."""
    offset = 0
    while offset + 6 <= len(body):
        item_length = int.from_bytes(body[offset:offset + 4], "big")
        control = body[offset + 5]
        end = offset + 4 + item_length
        if item_length < 2 or end > len(body) or not control & 0x01:
            raise UnexpectedResponse("a response with a data set, or a malformed PDV item")
        command += body[offset + 6:end]
        offset = end
        if control & 0x02:
            if offset != len(body):
                raise UnexpectedResponse("more after the response's last command fragment")
            return True
    if offset != len(body):
        raise UnexpectedResponse("a truncated PDV item")
    return False


def _status_of(command: bytes, message_id: int) -> int:
    values: dict[int, int] = {}
    offset = 0
    while offset + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHI", command, offset)
        offset += 8
        if group == 0x0000 and element in (COMMAND_FIELD, MESSAGE_ID_RESPONDED_TO, STATUS) and length == 2:
            values[element] = struct.unpack_from("<H", command, offset)[0]
        offset += length
    if values.get(COMMAND_FIELD) != C_STORE_RSP or values.get(MESSAGE_ID_RESPONDED_TO) != message_id \
            or STATUS not in values:
        raise UnexpectedResponse("not the C-STORE response to our request")
    return values[STATUS]


def read_responses_directly(association: Any) -> ResponseReader | None:
    """For an established requestor association whose DIMSE messages the writer sends (else None)."""
    existing: ResponseReader | None = getattr(association, _ATTRIBUTE, None)
    if existing is not None:
        return existing
    sock = association.dul.socket
    if type(sock) is not AssociationSocket or not isinstance(sock.socket, socket.socket) \
            or sock.socket.__class__ is not socket.socket:
        return None  # TLS, or a socket class of our own already
    sock.__class__ = HandedBackSocket
    reader = ResponseReader(association)
    setattr(association, _ATTRIBUTE, reader)
    return reader


def reader_of(association: Any) -> ResponseReader | None:
    return getattr(association, _ATTRIBUTE, None)
