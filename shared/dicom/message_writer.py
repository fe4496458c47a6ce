"""DIMSE messages written to the socket by the thread that sends them, not queued for pynetdicom's DUL thread.

pynetdicom hands every P-DATA fragment of a message to its DUL thread through a queue; that thread builds a PDU
object per fragment, encodes it and sends it with one system call. A 526 KB instance to a peer with 16 KB PDUs
is 33 such hand-offs, each a switch of the GIL between two threads. Here the sending thread frames the
P-DATA-TF PDUs itself (PS3.8 9.3.5: type 04H, PDU length, one PDV item: item length, presentation context ID,
message control header, fragment) and writes them in batches; a stored object is streamed from its file as
stored, after its File Meta, and its command set is encoded without a pydicom Dataset.

Every DIMSE message of the association goes through the writer (pynetdicom's ``dimse.send_msg`` is replaced),
one whole message at a time (PS3.8 9.3.1: no fragment of another message in between). The DUL thread keeps the
association control PDUs (release, abort), which never fall inside an established association's message.
TLS associations keep pynetdicom's path: an OpenSSL connection must not be written by one thread while another
reads it.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

from pynetdicom import evt
from pynetdicom._handlers import standard_dimse_sent_handler
from pynetdicom.dimse import _RQ_TO_MESSAGE, _RSP_TO_MESSAGE
from pynetdicom.dimse_primitives import C_STORE

from shared.dicom.echo_response import EchoResponse, encode_echo_response
from shared.dicom.find_response import FindResponse, encode_find_response, plain_find_response
from shared.dicom.store_request import StoreRequest, StoreResponse, encode_command, encode_response

_PDU_AND_ITEM_HEADER = struct.Struct(">BBLLB")  # PDU type, reserved, PDU length, PDV item length, context ID
_P_DATA_TF = 0x04
_UNLIMITED_FRAGMENT = 1 << 20  # the peer set no maximum PDU length
_BATCH_BYTES = 1 << 18
_PDU_AND_DATA_HEADER_LENGTH = 12  # PDU type, reserved, length (6); PDV item length, context ID, control (6)
_ATTRIBUTE = "_pacs_message_writer"

DATA_SET_FRAGMENT = 0x00
LAST_DATA_SET_FRAGMENT = 0x02
COMMAND_FRAGMENT = 0x01
LAST_COMMAND_FRAGMENT = 0x03


class AssociationGone(OSError):
    """The association ended before or while the message was written."""


class StoredObjectSent:
    """What EVT_DIMSE_SENT reports for a C-STORE request of a stored object (no pydicom command set is built)."""

    def __init__(self, data_set_size: int) -> None:
        self.data_set_size = data_set_size


class FindResponseSent:
    """What EVT_DIMSE_SENT reports for a C-FIND response encoded without a pydicom command set."""

    def __init__(self, response: FindResponse) -> None:
        self.response = response
        self.data_set_size = len(response.identifier or b"")


class StoreResponseSent:
    """What EVT_DIMSE_SENT reports for a plain C-STORE response (encoded without a pydicom command set)."""

    data_set = None

    def __init__(self, response: StoreResponse) -> None:
        self.response = response


class EchoResponseSent:
    """What EVT_DIMSE_SENT reports for a C-ECHO response encoded without a pydicom command set."""

    data_set = None

    def __init__(self, response: EchoResponse) -> None:
        self.response = response


def _plain_store_response(primitive: Any) -> StoreResponse | None:
    """The C-STORE response as its few values, if it carries nothing but a status (every Success does)."""
    if primitive.__class__ is not C_STORE or primitive.MessageIDBeingRespondedTo is None:
        return None
    if primitive.Status != 0x0000 or primitive.ErrorComment is not None or primitive.OffendingElement is not None:
        return None
    if primitive.AffectedSOPClassUID is None or primitive.AffectedSOPInstanceUID is None:
        return None
    return StoreResponse(str(primitive.AffectedSOPClassUID), str(primitive.AffectedSOPInstanceUID),
                         int(primitive.MessageIDBeingRespondedTo), 0x0000)


def _fragment_size(association: Any) -> int:
    maximum = int(association.dimse.maximum_pdu_size or 0)
    return maximum - 6 if maximum else _UNLIMITED_FRAGMENT


def _header(context_id: int, pdv_length: int) -> bytes:
    """P-DATA-TF header and PDV item header for one PDV of ``pdv_length`` bytes (control header included)."""
    return _PDU_AND_ITEM_HEADER.pack(_P_DATA_TF, 0, pdv_length + 5, pdv_length + 1, context_id)


def _fragment_header(context_id: int, fragment_length: int, control: int) -> bytes:
    """Everything a P-DATA-TF PDU of one PDV carries before the fragment (PS3.8 9.3.5, E.2)."""
    return _header(context_id, fragment_length + 1) + bytes((control,))


def _pdu(context_id: int, control: int, fragment: bytes | memoryview) -> list[bytes | memoryview]:
    return [_fragment_header(context_id, len(fragment), control), fragment]


def _fragments(data: bytes | memoryview, size: int) -> Iterator[tuple[bool, memoryview]]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield start + size >= len(data), view[start:start + size]


class MessageWriter:
    """Writes the DIMSE messages of one association, whole, from the calling thread."""

    def __init__(self, association: Any, sock: socket.socket) -> None:
        self._association = association
        self._socket = sock
        self._lock = threading.Lock()

    def _check_established(self) -> None:
        if not self._association.is_established:
            raise AssociationGone("the association is no longer established")

    def _write(self, buffers: list[bytes | memoryview]) -> None:
        self._socket.sendall(b"".join(buffers))

    def _command_pdus(self, context_id: int, command: bytes) -> list[bytes | memoryview]:
        buffers: list[bytes | memoryview] = []
        for last, fragment in _fragments(command, _fragment_size(self._association)):
            buffers += _pdu(context_id, LAST_COMMAND_FRAGMENT if last else COMMAND_FRAGMENT, fragment)
        return buffers

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """pynetdicom's ``DIMSEServiceProvider.send_msg``, writing instead of queueing."""
        association = self._association
        store_response = _plain_store_response(primitive)
        if store_response is not None:
            self.send_store_response(context_id, store_response)
            return
        find_response = plain_find_response(primitive)
        if find_response is not None:
            self._send_find_response(context_id, find_response)
            return
        if primitive.MessageIDBeingRespondedTo is None:
            message = _RQ_TO_MESSAGE[primitive.__class__]()
        else:
            message = _RSP_TO_MESSAGE[primitive.__class__]()
        message.primitive_to_message(primitive)
        message.context_id = context_id
        evt.trigger(association, evt.EVT_DIMSE_SENT, {"message": message})
        batch: list[bytes | memoryview] = []
        batched = 0
        with self._lock:
            if not association.is_established:
                return  # as a message queued for a DUL that has stopped: never sent
            try:
                for pdata in message.encode_msg(context_id, association.dimse.maximum_pdu_size):
                    for item_context_id, value in pdata.presentation_data_value_list:  # control header included
                        batch += (_header(item_context_id, len(value)), value)
                        batched += len(value)
                    if batched >= _BATCH_BYTES:
                        self._write(batch)
                        batch, batched = [], 0
                if batch:
                    self._write(batch)
            except OSError:
                association.abort()  # the connection failed or the peer stopped reading: the DUL reports it

    def _write_message(self, buffers: list[bytes | memoryview]) -> None:
        """One whole message; none on an association that has ended, and an abort if the write fails."""
        with self._lock:
            if not self._association.is_established:
                return  # as a message queued for a DUL that has stopped: never sent
            try:
                self._write(buffers)
            except OSError:
                self._association.abort()  # the connection failed or the peer stopped reading: the DUL reports it

    def send_store_response(self, context_id: int, response: StoreResponse) -> None:
        """A C-STORE response carrying only its status, encoded without a pydicom command set."""
        evt.trigger(self._association, evt.EVT_DIMSE_SENT, {"message": StoreResponseSent(response)})
        self._write_message(self._command_pdus(context_id, encode_response(response)))

    def send_echo_response(self, context_id: int, response: EchoResponse) -> None:
        """A C-ECHO response carrying only its status, encoded without a pydicom command set."""
        evt.trigger(self._association, evt.EVT_DIMSE_SENT, {"message": EchoResponseSent(response)})
        self._write_message(self._command_pdus(context_id, encode_echo_response(response)))

    def _send_find_response(self, context_id: int, response: FindResponse) -> None:
        """A C-FIND response encoded without a pydicom command set; its identifier is sent as encoded."""
        evt.trigger(self._association, evt.EVT_DIMSE_SENT, {"message": FindResponseSent(response)})
        buffers = self._command_pdus(context_id, encode_find_response(response))
        for last, fragment in _fragments(response.identifier or b"", _fragment_size(self._association)):
            buffers += _pdu(context_id, LAST_DATA_SET_FRAGMENT if last else DATA_SET_FRAGMENT, fragment)
        self._write_message(buffers)

    def send_stored_object(self, context_id: int, request: StoreRequest, data_set: BinaryIO) -> int:
        """A C-STORE request whose data set is read from ``data_set`` up to its end, as stored. Returns its size.

        An error once the first byte is written leaves half a message on the wire: the association is aborted.
        """
        size = _fragment_size(self._association)
        block_size = max(size, _BATCH_BYTES // size * size)  # whole fragments in every block but the last
        sent = 0
        writing = False
        with self._lock:
            self._check_established()
            buffers = self._command_pdus(context_id, encode_command(request))
            block = data_set.read(block_size)
            try:
                while block:
                    following = data_set.read(block_size)
                    for last, fragment in _fragments(block, size):
                        control = LAST_DATA_SET_FRAGMENT if last and not following else DATA_SET_FRAGMENT
                        buffers += _pdu(context_id, control, fragment)
                    writing = True
                    self._write(buffers)
                    sent += len(block)
                    buffers, block = [], following
            except BaseException:
                if writing:
                    self._association.abort()
                raise
        if not sent:
            raise ValueError("the stored object has an empty data set")
        evt.trigger(self._association, evt.EVT_DIMSE_SENT,
                    {"message": StoredObjectSent(sent)})
        return sent

    def frame_stored_object(self, context_id: int, request: StoreRequest, data_set_size: int,
                            buffer: bytearray | None) -> tuple[bytearray, memoryview, list[memoryview]]:
        """Lay out a C-STORE request of ``data_set_size`` bytes as its PDUs in ``buffer`` (or in a new one when it
        is too small or None): the command and every fragment's header are written, the fragments' places are
        returned for the caller to fill. Returns the buffer used, the whole request in it (for send_framed) and
        the fragments' places, in order."""
        if not data_set_size:
            raise ValueError("the stored object has an empty data set")
        size = _fragment_size(self._association)
        command = b"".join(self._command_pdus(context_id, encode_command(request)))
        count = -(-data_set_size // size)
        total = len(command) + data_set_size + count * _PDU_AND_DATA_HEADER_LENGTH
        if buffer is None or len(buffer) < total:
            buffer = bytearray(total)  # never resized in place: a request framed earlier may still be in use
        view = memoryview(buffer)
        view[:len(command)] = command
        places: list[memoryview] = []
        position = len(command)
        full_header = _fragment_header(context_id, size, DATA_SET_FRAGMENT)
        for index in range(count):
            length = min(size, data_set_size - index * size)
            last = index == count - 1
            view[position:position + _PDU_AND_DATA_HEADER_LENGTH] = \
                _fragment_header(context_id, length, LAST_DATA_SET_FRAGMENT) if last else full_header
            position += _PDU_AND_DATA_HEADER_LENGTH
            places.append(view[position:position + length])
            position += length
        return buffer, view[:total], places

    def send_framed(self, framed: bytes | memoryview, data_set_size: int) -> None:
        """Write a request framed by frame_stored_object; a failed write aborts the association."""
        with self._lock:
            self._check_established()
            try:
                self._socket.sendall(framed)
            except BaseException:
                self._association.abort()
                raise
        evt.trigger(self._association, evt.EVT_DIMSE_SENT, {"message": StoredObjectSent(data_set_size)})


def write_messages_directly(association: Any) -> MessageWriter | None:
    """From now on the association's DIMSE messages are written by the threads that send them.

    Call once the association is established (requestor) or its thread is about to start (acceptor). Returns the
    writer, or None for an association that keeps pynetdicom's path (TLS, no socket)."""
    existing: MessageWriter | None = getattr(association, _ATTRIBUTE, None)
    if existing is not None:
        return existing
    sock = getattr(association.dul.socket, "socket", None)
    if sock is None or isinstance(sock, ssl.SSLSocket):
        return None
    seconds = association.dimse_timeout
    if seconds:  # a peer that stops reading fails the write instead of blocking the sender for ever
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(seconds), 0))
    writer = MessageWriter(association, sock)
    # pynetdicom's debug log of sent messages (bound only when its LOG_HANDLER_LEVEL is "standard") knows its own
    # message classes only; our services turn it off anyway.
    association.unbind(evt.EVT_DIMSE_SENT, standard_dimse_sent_handler)
    association.dimse.send_msg = writer.send_msg
    setattr(association, _ATTRIBUTE, writer)
    return writer


def writer_of(association: Any) -> MessageWriter | None:
    return getattr(association, _ATTRIBUTE, None)
