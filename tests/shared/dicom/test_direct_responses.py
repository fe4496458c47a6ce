"""Plain C-STORE responses are decoded by hand and queued as pynetdicom would queue them; anything else is left
to pynetdicom as it arrived."""

from __future__ import annotations

import queue
import struct
from types import SimpleNamespace

import pytest
from pynetdicom.dimse_primitives import C_STORE

from shared.dicom import command_set
from shared.dicom.direct_responses import ResponseReader, plain_store_response
from shared.dicom.pdata import fragments
from shared.dicom.store_request import StoreResponse, encode_response

CT = "1.2.840.10008.5.1.4.1.1.2"
PLAIN = encode_response(StoreResponse(CT, "1.2.3.4", 7, 0x0000))


def element(number: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0, number, len(value)) + value


def with_error_comment(encoded: bytes) -> bytes:
    elements = command_set.decode(encoded)
    elements[0x0902] = b"disk full "  # (0000,0902) Error Comment
    body = b"".join(element(number, value) for number, value in sorted(elements.items()) if number != 0x0000)
    return element(0x0000, struct.pack("<L", len(body))) + body


def item(context_id: int, control: int, payload: bytes) -> bytes:
    return struct.pack(">LBB", len(payload) + 2, context_id, control) + payload


def test_a_plain_response_is_read_with_its_status_and_message_id() -> None:
    assert plain_store_response(PLAIN) == StoreResponse(CT, "1.2.3.4", 7, 0x0000)
    warning = encode_response(StoreResponse(CT, "1.2.3.4", 8, 0xB000))
    assert plain_store_response(warning) == StoreResponse(CT, "1.2.3.4", 8, 0xB000)


@pytest.mark.parametrize("encoded", [
    with_error_comment(encode_response(StoreResponse(CT, "1.2.3.4", 7, 0xA700))),  # error details: pynetdicom's
    encode_response(StoreResponse(CT, "1.2.x", 7, 0x0000)),  # an invalid UID
    b"\x00\x00\x00\x00",  # not a command set
], ids=["error comment", "invalid uid", "garbage"])
def test_anything_else_is_not_a_plain_response(encoded: bytes) -> None:
    assert plain_store_response(encoded) is None


def test_a_response_with_an_error_comment_is_still_a_well_formed_command_set() -> None:
    assert command_set.decode(with_error_comment(PLAIN))[0x0902] == b"disk full "  # refused for its details only


def requestor() -> SimpleNamespace:
    return SimpleNamespace(dimse=SimpleNamespace(message=None, msg_queue=queue.Queue()),
                           get_handlers=lambda _event: [])


def test_the_reader_queues_the_response_as_a_c_store_primitive() -> None:
    assoc = requestor()
    assert ResponseReader(assoc).on_p_data(bytearray(item(3, 0x03, PLAIN))) is None
    context_id, primitive = assoc.dimse.msg_queue.get_nowait()
    assert context_id == 3 and isinstance(primitive, C_STORE)
    assert (primitive.MessageIDBeingRespondedTo, primitive.Status) == (7, 0x0000)
    assert str(primitive.AffectedSOPInstanceUID) == "1.2.3.4"


@pytest.mark.parametrize("body", [
    item(3, 0x03, with_error_comment(PLAIN)),
    item(3, 0x01, PLAIN[:20]) + item(3, 0x03, PLAIN[20:]),  # a command in two fragments
    item(3, 0x02, b"data"),
], ids=["error comment", "fragmented command", "data set"])
def test_the_reader_hands_anything_else_to_pynetdicom_unchanged(body: bytes) -> None:
    assoc = requestor()
    pdu = ResponseReader(assoc).on_p_data(bytearray(body))
    assert pdu is not None and [bytes(f.item) for f in fragments(pdu[6:])] == [bytes(f.item) for f in fragments(body)]
    assert assoc.dimse.msg_queue.empty()


def test_the_reader_never_cuts_into_a_message_pynetdicom_is_assembling() -> None:
    assoc = requestor()
    assoc.dimse.message = object()  # pynetdicom holds the first fragments of a message
    assert ResponseReader(assoc).on_p_data(bytearray(item(3, 0x03, PLAIN))) is not None
    assert assoc.dimse.msg_queue.empty()
