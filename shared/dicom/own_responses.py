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
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pynetdicom import evt

from shared.dicom.direct_responses import StoreResponseReceived, plain_store_response_in
from shared.dicom.event_driven import wake_dul
from shared.dicom.pdu_reading import (
    INVALID_PDU,
    KNOWN_PDU_TYPES,
    P_DATA_TF,
    PDU_HEADER,
    TRANSPORT_CLOSED,
    queue_for_pynetdicom,
)
from shared.dicom.tcp import quickack

_ATTRIBUTE = "_pacs_response_channel"
HELD_ATTRIBUTE = "_pacs_socket_held"  # read by shared.dicom.event_driven's DUL wait
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
                if not self.holding:
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
        found = plain_store_response_in(body) if header[0] == P_DATA_TF else None
        if found is not None and found[1].message_id_being_responded_to == message_id:
            evt.trigger(self._association, evt.EVT_DIMSE_RECV, {"message": StoreResponseReceived(found[1])})
            return found[1].status
        self.give_back()  # as pynetdicom's DUL thread would have queued it; that thread reads on
        queue_for_pynetdicom(self._dul, header + body)
        return None

    def resume(self) -> None:
        """After a message awaited pynetdicom's way: hold the socket again if the association still stands."""
        if self._association.is_established:
            self._hold()

    def _read_pdu(self) -> tuple[bytes, bytearray]:
        header = bytes(self._receive(6))
        pdu_type, _, length = PDU_HEADER.unpack(header)
        if pdu_type not in KNOWN_PDU_TYPES or length > _MAX_PDU_LENGTH:
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


@contextmanager
def read_by_pynetdicom(association: Any) -> Iterator[None]:
    """Within: the association's responses are read by pynetdicom's DUL thread (for pynetdicom's own send_*)."""
    channel = response_channel_of(association)
    if channel is None:
        yield
        return
    channel.give_back()
    try:
        yield
    finally:
        channel.resume()
