"""The mover's sending thread reads the responses to its C-STOREs from the socket itself.

Read by pynetdicom's DUL thread, each response costs a wake-up of that thread, a turn of its loop, a queue hand-off
and a wake-up of the sender: 0.2 ms of CPU per sub-operation (measured with bench/retrieve.py's study, 500
objects of 526 KB), spent while the destination waits for the next object. While a ResponseChannel holds an
association's socket, the DUL thread leaves the socket alone (its wait does not watch it, its PDU reading does
nothing) and the sender reads each response where it waits for it.

Only a plain C-STORE response (shared.dicom.direct_responses) to the request just sent is taken here. Any other
PDU (a response with error details, a fragmented one, an A-ABORT, an A-RELEASE) is handed to pynetdicom as if its
DUL thread had read it, and the response is then awaited pynetdicom's way. After a P-DATA the channel takes the
socket again; after anything else (the association is ending) it leaves it to the DUL thread.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import threading
from typing import Any

from pynetdicom import evt

from shared.dicom.event_driven import wake_dul
from shared.dicom.direct_responses import StoreResponseReceived, plain_store_response
from shared.dicom.pdata import MalformedPData, fragments
from shared.dicom.tcp import quickack

_ATTRIBUTE = "_pacs_response_channel"
HELD_ATTRIBUTE = "_pacs_socket_held"  # read by shared.dicom.event_driven's DUL wait
P_DATA_TF = 0x04
TRANSPORT_CLOSED = "Evt17"
INVALID_PDU = "Evt19"
_PDU_HEADER = struct.Struct(">BBL")
_MAX_PDU_LENGTH = 1 << 26  # far above any maximum a peer negotiates; a longer one is a broken stream


class NoResponse(Exception):
    """The connection closed, broke or stayed silent for the DIMSE timeout while a response was awaited."""


class ResponseChannel:
    """Holds a requestor association's socket for the thread that sends C-STORE requests on it."""

    def __init__(self, association: Any, sock: socket.socket) -> None:
        self._association = association
        self._dul = association.dul
        self._socket = sock
        self._timeout = float(association.dimse_timeout or 0) or None
        self._lock = threading.Lock()  # the DUL thread reads a PDU under it: taking the socket waits for that read
        read_by_dul = self._dul._read_pdu_data

        def read_unless_held() -> None:
            with self._lock:
                if not getattr(self._dul, HELD_ATTRIBUTE, False):
                    read_by_dul()

        self._dul._read_pdu_data = read_unless_held
        self._hold()

    def _hold(self) -> None:
        with self._lock:
            setattr(self._dul, HELD_ATTRIBUTE, True)

    def give_back(self) -> None:
        """The DUL thread reads the socket again (for a message awaited pynetdicom's way, or for good)."""
        setattr(self._dul, HELD_ATTRIBUTE, False)
        wake_dul(self._dul)

    @property
    def holding(self) -> bool:
        return bool(getattr(self._dul, HELD_ATTRIBUTE, False))

    def store_status(self, message_id: int) -> int | None:
        """The status of the plain response to ``message_id``; None when another message came (it then went to
        pynetdicom, and the caller awaits it there). NoResponse when none can come."""
        header, body = self._read_pdu()
        self._dul._idle_timer.restart()
        if header[0] == P_DATA_TF:
            response = self._plain_response(body)
            if response is not None and response.message_id_being_responded_to == message_id:
                evt.trigger(self._association, evt.EVT_DIMSE_RECV, {"message": StoreResponseReceived(response)})
                return response.status
        self._hand_to_pynetdicom(header, body)
        return None

    def resume(self) -> None:
        """After a message awaited pynetdicom's way: hold the socket again if the association still stands."""
        if self._association.is_established:
            self._hold()

    @staticmethod
    def _plain_response(body: bytearray) -> Any:
        try:
            items = fragments(body)
        except MalformedPData:
            return None
        if len(items) != 1 or not items[0].is_command or not items[0].is_last:
            return None
        return plain_store_response(bytes(items[0].data))

    def _hand_to_pynetdicom(self, header: bytes, body: bytearray) -> None:
        """As pynetdicom's DUL thread would have queued the PDU; the socket goes back to that thread."""
        self.give_back()
        try:
            decoded, event = self._dul._decode_pdu(bytearray(header) + body)
        except Exception:
            self._dul.event_queue.put(INVALID_PDU)
            return
        self._dul.event_queue.put(event)
        self._dul._recv_pdu.put(decoded)

    def _read_pdu(self) -> tuple[bytes, bytearray]:
        header = bytes(self._receive(6))
        pdu_type, _, length = _PDU_HEADER.unpack(header)
        if not 0x01 <= pdu_type <= 0x07 or length > _MAX_PDU_LENGTH:
            self.give_back()
            self._dul.event_queue.put(INVALID_PDU)
            raise NoResponse("the destination sent something that is not a PDU")
        return header, self._receive(length)

    def _receive(self, length: int) -> bytearray:
        data = bytearray(length)
        view = memoryview(data)
        received = 0
        readable = select.poll()
        readable.register(self._socket, select.POLLIN)
        while received < length:
            quickack(self._socket)  # the ACK of what arrives is decided on arrival
            try:
                if not readable.poll(None if self._timeout is None else self._timeout * 1000):
                    raise NoResponse("no response within the DIMSE timeout")
                count = self._socket.recv_into(view[received:], length - received)
            except OSError as exc:
                count = 0
                reason: BaseException | None = exc
            else:
                reason = None
            if count == 0:
                self.give_back()
                self._dul.event_queue.put(TRANSPORT_CLOSED)
                raise NoResponse("the connection closed") from reason
            received += count
        return data


def read_own_responses(association: Any) -> ResponseChannel | None:
    """From now on the thread that sends C-STOREs on this established requestor association reads their
    responses; None for an association that keeps pynetdicom's path (TLS, no socket)."""
    sock = getattr(association.dul.socket, "socket", None)
    if sock is None or isinstance(sock, ssl.SSLSocket):
        return None
    channel = ResponseChannel(association, sock)
    setattr(association, _ATTRIBUTE, channel)
    return channel


def response_channel_of(association: Any) -> ResponseChannel | None:
    return getattr(association, _ATTRIBUTE, None)
