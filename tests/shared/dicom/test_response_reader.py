"""The sending thread reads the response to its own C-STORE request: the status of the right response; an abort
in its place reaches pynetdicom as usual; a wrong or missing response aborts the association, never stalls it."""

from __future__ import annotations

import io
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from shared.dicom.message_writer import write_messages_directly
from shared.dicom.part10 import encode_part10, skip_file_meta
from shared.dicom.requestor import send_without_waiting_for_the_reactor
from shared.dicom.response_reader import (
    UnexpectedResponse,
    _status_of,
    _take_command,
    read_responses_directly,
)
from shared.dicom.store_request import StoreRequest
from tests.factory import encode_dataset, make_image
from tests.node import free_port


class Peer:
    """A pynetdicom storage SCP whose answer to each C-STORE the test chooses."""

    def __init__(self) -> None:
        self.answer: Any = 0x0000
        self.received: list[str] = []
        ae = AE(ae_title="PEER")
        ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
        ae.add_supported_context(Verification)
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event: evt.Event) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return int(self.answer(event)) if callable(self.answer) else int(self.answer)


@pytest.fixture
def peer() -> Iterator[Peer]:
    running = Peer()
    yield running
    running.server.shutdown()


@pytest.fixture
def association(peer: Peer) -> Iterator[Any]:
    ae = AE(ae_title="SENDER")
    ae.dimse_timeout = 2
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", peer.port, ae_title="PEER")
    assert assoc.is_established
    send_without_waiting_for_the_reactor(assoc)
    yield assoc
    if assoc.is_established:
        assoc.release()


def send(association: Any, message_id: int = 3) -> int | None:
    writer = write_messages_directly(association)
    reader = read_responses_directly(association)
    assert writer is not None and reader is not None
    image = make_image()
    data_set = encode_dataset(image, ExplicitVRLittleEndian)
    stream = io.BytesIO(encode_part10(data_set, image.SOPClassUID, image.SOPInstanceUID, ExplicitVRLittleEndian))
    skip_file_meta(stream)
    context_id = next(c.context_id for c in association.accepted_contexts if c.abstract_syntax == CTImageStorage)
    with reader.exchange():
        writer.send_stored_object(context_id, StoreRequest(str(image.SOPClassUID), str(image.SOPInstanceUID),
                                                           message_id), stream)
        return reader.store_status(message_id)


def test_the_status_of_each_response_is_read(peer: Peer, association: Any) -> None:
    assert [send(association, message_id) for message_id in (1, 2, 3)] == [0x0000] * 3
    peer.answer = 0xA700
    assert send(association, 4) == 0xA700
    assert len(peer.received) == 4
    assert association.is_established
    assert association.send_c_echo().Status == 0x0000  # pynetdicom reads the socket again between exchanges


def test_an_abort_in_place_of_the_response_is_handled_by_pynetdicom(peer: Peer, association: Any) -> None:
    peer.answer = lambda event: event.assoc.abort() or 0x0000
    started = time.monotonic()
    assert send(association) is None
    deadline = time.monotonic() + 5
    while association.is_established and time.monotonic() < deadline:
        time.sleep(0.01)
    assert association.is_aborted
    assert time.monotonic() - started < 5


def test_no_response_within_the_dimse_timeout_aborts_the_association(peer: Peer, association: Any) -> None:
    release = threading.Event()
    peer.answer = lambda event: release.wait(10) and 0x0000
    started = time.monotonic()
    try:
        assert send(association) is None
    finally:
        release.set()
    assert 1.5 < time.monotonic() - started < 6
    assert association.is_aborted


def pdv(control: int, data: bytes, context_id: int = 1) -> bytes:
    return struct.pack(">IBB", len(data) + 2, context_id, control) + data


def command(*elements: tuple[int, int]) -> bytes:
    return b"".join(struct.pack("<HHIH", 0x0000, element, 2, value) for element, value in elements)


RESPONSE = command((0x0100, 0x8001), (0x0120, 7), (0x0800, 0x0101), (0x0900, 0xB000))


def test_a_response_in_several_fragments_is_put_together() -> None:
    taken = bytearray()
    assert not _take_command(pdv(0x01, RESPONSE[:10]), taken)
    assert _take_command(pdv(0x01, RESPONSE[10:20]) + pdv(0x03, RESPONSE[20:]), taken)
    assert _status_of(bytes(taken), 7) == 0xB000


@pytest.mark.parametrize("body", [pdv(0x02, b"\x00" * 8), pdv(0x03, RESPONSE) + pdv(0x03, RESPONSE),
                                  pdv(0x03, RESPONSE)[:-3] + b"\x00\x00\x00\x09"],
                         ids=["data set", "two messages", "truncated item"])
def test_anything_but_one_command_is_unexpected(body: bytes) -> None:
    with pytest.raises(UnexpectedResponse):
        _take_command(body, bytearray())


@pytest.mark.parametrize("answer", [command((0x0100, 0x8001), (0x0120, 8), (0x0900, 0)),
                                    command((0x0100, 0x8030), (0x0120, 7), (0x0900, 0)),
                                    command((0x0100, 0x8001), (0x0120, 7))],
                         ids=["another message", "another command", "no status"])
def test_only_the_response_to_our_request_gives_a_status(answer: bytes) -> None:
    with pytest.raises(UnexpectedResponse):
        _status_of(answer, 7)
