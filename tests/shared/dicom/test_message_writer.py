"""DIMSE messages written by the sending thread: whole PDUs within the peer's maximum length, one message at a
time, a stored object byte for byte as stored; a failure halfway aborts the association rather than leaving half
a message on the wire."""

from __future__ import annotations

import io
import socket
import ssl
import threading
import types
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification

from shared.dicom.message_writer import AssociationGone, StoreResponseSent, write_messages_directly, writer_of
from shared.dicom.part10 import encode_part10, skip_file_meta
from shared.dicom.requestor import send_without_waiting_for_the_reactor
from shared.dicom.store_request import StoreRequest
from tests.factory import encode_dataset, make_image
from tests.node import free_port

PEER_MAXIMUM_PDU = 4096


class Peer:
    """A pynetdicom storage SCP with a small maximum PDU that keeps the data sets and PDU lengths it receives."""

    def __init__(self) -> None:
        self.data_sets: dict[str, bytes] = {}
        self.p_data_lengths: list[int] = []
        self.aborted = threading.Event()
        ae = AE(ae_title="PEER")
        ae.maximum_pdu_size = PEER_MAXIMUM_PDU
        ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
        ae.add_supported_context(Verification)
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_C_STORE, self._store), (evt.EVT_PDU_RECV, self._pdu), (evt.EVT_ABORTED, self._aborted)])

    def _store(self, event: evt.Event) -> int:
        self.data_sets[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000

    def _pdu(self, event: evt.Event) -> None:
        if event.pdu.__class__.__name__ == "P_DATA_TF":
            self.p_data_lengths.append(len(event.pdu.encode()) - 6)

    def _aborted(self, _event: evt.Event) -> None:
        self.aborted.set()


@pytest.fixture
def peer() -> Iterator[Peer]:
    running = Peer()
    yield running
    running.server.shutdown()


@pytest.fixture
def association(peer: Peer) -> Iterator[Any]:
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", peer.port, ae_title="PEER")
    assert assoc.is_established
    send_without_waiting_for_the_reactor(assoc)  # responses go to the sending thread, as in the mover
    yield assoc
    if assoc.is_established:
        assoc.release()


def stored_object(rows: int = 64) -> tuple[StoreRequest, bytes, bytes]:
    image = make_image(rows=rows, columns=rows)
    data_set = encode_dataset(image, ExplicitVRLittleEndian)
    part10 = encode_part10(data_set, image.SOPClassUID, image.SOPInstanceUID, ExplicitVRLittleEndian)
    return StoreRequest(str(image.SOPClassUID), str(image.SOPInstanceUID), 7), part10, data_set


def context_id(association: Any) -> int:
    return next(c.context_id for c in association.accepted_contexts if c.abstract_syntax == CTImageStorage)


def test_a_stored_object_arrives_as_stored_in_pdus_no_longer_than_the_peer_takes(peer: Peer, association: Any) -> None:
    writer = write_messages_directly(association)
    assert writer is not None and writer_of(association) is writer
    request, part10, data_set = stored_object()
    assert len(data_set) > 2 * PEER_MAXIMUM_PDU  # several fragments
    stream = io.BytesIO(part10)
    skip_file_meta(stream)

    assert writer.send_stored_object(context_id(association), request, stream) == len(data_set)
    _, response = association.dimse.get_msg(block=True)

    assert response.Status == 0x0000 and response.MessageIDBeingRespondedTo == 7
    assert peer.data_sets[request.sop_instance_uid] == data_set
    assert max(peer.p_data_lengths) <= PEER_MAXIMUM_PDU
    assert len(peer.p_data_lengths) >= len(data_set) // PEER_MAXIMUM_PDU + 1


def test_messages_pynetdicom_builds_go_through_the_writer(peer: Peer, association: Any) -> None:
    writer = write_messages_directly(association)
    assert association.dimse.send_msg == writer.send_msg
    assert association.send_c_echo().Status == 0x0000
    image = make_image()
    image.file_meta = FileMetaDataset()
    image.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert association.send_c_store(image).Status == 0x0000
    assert peer.data_sets[str(image.SOPInstanceUID)] == encode_dataset(image, ExplicitVRLittleEndian)


class FailingAfterFirstBlock(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        if self.reads > 2:
            raise OSError("the object store went away")
        return super().read(size)


def test_a_failure_halfway_through_a_data_set_aborts_the_association(peer: Peer, association: Any) -> None:
    writer = write_messages_directly(association)
    assert writer is not None
    request, _, _ = stored_object()
    with pytest.raises(OSError):
        writer.send_stored_object(context_id(association), request, FailingAfterFirstBlock(b"\x08\x00" * (1 << 20)))
    assert association.is_aborted
    assert peer.aborted.wait(5)
    assert peer.data_sets == {}


def test_a_failure_before_the_first_byte_leaves_the_association_usable(peer: Peer, association: Any) -> None:
    writer = write_messages_directly(association)
    assert writer is not None
    request, _, _ = stored_object()
    with pytest.raises(ValueError):
        writer.send_stored_object(context_id(association), request, io.BytesIO(b""))
    assert association.is_established
    assert association.send_c_echo().Status == 0x0000


def test_nothing_is_written_once_the_association_is_released(peer: Peer, association: Any) -> None:
    writer = write_messages_directly(association)
    assert writer is not None
    association.release()
    request, part10, _ = stored_object()
    with pytest.raises(AssociationGone):
        writer.send_stored_object(1, request, io.BytesIO(part10))


def test_tls_associations_keep_pynetdicoms_path() -> None:
    raw = socket.socket()
    try:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        dimse = types.SimpleNamespace(send_msg="pynetdicom's")
        association = types.SimpleNamespace(dul=types.SimpleNamespace(socket=types.SimpleNamespace(socket=tls)),
                                            dimse=dimse, dimse_timeout=30, unbind=None)
        assert write_messages_directly(association) is None
        assert dimse.send_msg == "pynetdicom's"
    finally:
        raw.close()


class RecordingPeerSocket:
    """Stands in for the association's socket: keeps what the writer sends."""

    def __init__(self) -> None:
        self.sent = b""

    def sendall(self, data: bytes) -> None:
        self.sent += data


def test_a_plain_store_response_is_written_as_pynetdicom_would_and_reported_sent(association: Any) -> None:
    def response(status: int) -> C_STORE:
        primitive = C_STORE()
        primitive.MessageIDBeingRespondedTo = 5
        primitive.AffectedSOPClassUID = CTImageStorage
        primitive.AffectedSOPInstanceUID = "1.2.3.4.5"
        primitive.Status = status
        return primitive

    reported: list[Any] = []
    association.bind(evt.EVT_DIMSE_SENT, lambda event: reported.append(event.message))
    writer = write_messages_directly(association)
    assert writer is not None
    wire = RecordingPeerSocket()
    writer._socket = wire  # type: ignore[assignment]
    writer.send_msg(response(0x0000), 1)  # the hand-encoded path
    fast = wire.sent
    assert isinstance(reported[-1], StoreResponseSent) and reported[-1].response.status == 0x0000

    wire.sent = b""
    warning = response(0x0000)
    warning.ErrorComment = "kept"  # anything beyond the status goes through pynetdicom's encoding
    writer.send_msg(warning, 1)
    assert type(reported[-1]).__name__ == "C_STORE_RSP"

    wire.sent = b""
    pynetdicom_built = response(0xB000)
    writer.send_msg(pynetdicom_built, 1)
    # Same bytes but the status (the last two bytes before the SOP Instance UID element) as pynetdicom's encoding.
    assert len(wire.sent) == len(fast) and wire.sent.replace(b"\x00\xb0", b"\x00\x00") == fast
