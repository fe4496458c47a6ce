"""A DICOM client that writes whatever bytes a test wants: valid PDUs built with pynetdicom's encoders, or not.

Used to check how the node answers malformed and hostile traffic (PS3.8 PDUs written by hand).
"""

from __future__ import annotations

import socket
import struct
import time

from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.presentation import StoragePresentationContexts, build_context
from pynetdicom.transport import AddressInformation

A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RQ, A_ABORT = 0x02, 0x03, 0x04, 0x05, 0x07
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2"


def associate_rq(called_aet: str, calling_aet: str = "HOSTILE",
                 contexts: tuple[tuple[str, str | tuple[str, ...]], ...] = ((VERIFICATION, IMPLICIT_LITTLE_ENDIAN),),
                 max_length: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing ``contexts`` (abstract syntax, transfer syntax or syntaxes), ids 1, 3, 5, ..."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling_aet
    primitive.called_ae_title = called_aet
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 0)
    primitive.called_presentation_address = AddressInformation("127.0.0.1", 104)
    proposed = []
    for number, (abstract, transfer) in enumerate(contexts):
        context = build_context(abstract, [transfer] if isinstance(transfer, str) else list(transfer))
        context.context_id = 2 * number + 1
        proposed.append(context)
    primitive.presentation_context_definition_list = proposed
    length = MaximumLengthNotification()
    length.maximum_length_received = max_length
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.7433.1.1"
    primitive.user_information = [length, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def p_data(context_id: int, command: bool, last: bool, payload: bytes) -> bytes:
    """One P-DATA-TF PDU carrying one PDV."""
    header = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    pdv = struct.pack(">LB", len(payload) + 2, context_id) + bytes([header]) + payload
    return struct.pack(">BBL", P_DATA_TF, 0, len(pdv)) + pdv


class RawConnection:
    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_pdu(self, timeout: float = 10.0) -> tuple[int, bytes] | None:
        """The next PDU (type, body), or None when the node closed the connection."""
        self.sock.settimeout(timeout)
        header = self._read_exactly(6)
        if header is None:
            return None
        pdu_type, _, length = struct.unpack(">BBL", header)
        body = self._read_exactly(length)
        return None if body is None else (pdu_type, body)

    def _read_exactly(self, count: int) -> bytes | None:
        data = bytearray()
        while len(data) < count:
            try:
                chunk = self.sock.recv(count - len(data))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def closed_by_node(self, timeout: float) -> bool:
        """Whether the node ends the connection within ``timeout`` s (any PDU it sends first is skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.read_pdu(max(0.1, deadline - time.monotonic())) is None:
                    return True
            except (TimeoutError, socket.timeout):
                return False
        return False

    def associate(self, called_aet: str, **kwargs: object) -> int:
        """Send an A-ASSOCIATE-RQ and return the type of the answer PDU."""
        self.send(associate_rq(called_aet, **kwargs))  # type: ignore[arg-type]
        answer = self.read_pdu()
        assert answer is not None, "the node closed the connection instead of answering the association"
        return answer[0]

    def close(self) -> None:
        self.sock.close()


def storescu_like_associate_rq(called_aet: str, storage_contexts: int) -> bytes:
    """An A-ASSOCIATE-RQ as dcmtk's storescu sends it for one file (it proposes 128): storage SOP classes with
    Explicit VR Little Endian, Implicit VR Little Endian and Explicit VR Big Endian each."""
    syntaxes = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
    return associate_rq(called_aet, "STORESCU", tuple((str(context.abstract_syntax), syntaxes)
                                                      for context in StoragePresentationContexts[:storage_contexts]))
