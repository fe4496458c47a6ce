"""Our C-STORE request and response command sets are byte for byte what pynetdicom encodes for the same values."""

from __future__ import annotations

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from shared.dicom.store_request import StoreRequest, StoreResponse, encode_command, encode_response


def pynetdicom_command(request: StoreRequest) -> bytes:
    primitive = C_STORE()
    primitive.MessageID = request.message_id
    primitive.AffectedSOPClassUID = request.sop_class_uid
    primitive.AffectedSOPInstanceUID = request.sop_instance_uid
    primitive.Priority = 0x0000
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    message.command_set.CommandDataSetType = 0x0000
    return bytes(encode(message.command_set, True, True))


@pytest.mark.parametrize("request_", [
    StoreRequest(CTImageStorage, "1.2.3.4.5", 1),  # odd-length instance UID: NUL-padded
    StoreRequest(CTImageStorage, "1.2.3.4", 65535),
    StoreRequest(CTImageStorage, "1.2.826.0.1.3680043.8.498.1" + "1" * 36, 7),  # 64 characters
], ids=["odd", "even", "longest-uid"])
def test_the_command_set_is_what_pynetdicom_encodes(request_: StoreRequest) -> None:
    assert encode_command(request_) == pynetdicom_command(request_)


def test_the_group_length_counts_the_elements_after_it() -> None:
    command = encode_command(StoreRequest(CTImageStorage, "1.2.3", 9))
    assert int.from_bytes(command[8:12], "little") == len(command) - 12


def pynetdicom_response(response: StoreResponse) -> bytes:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = response.message_id_being_responded_to
    primitive.AffectedSOPClassUID = response.sop_class_uid
    primitive.AffectedSOPInstanceUID = response.sop_instance_uid
    primitive.Status = response.status
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    return bytes(encode(message.command_set, True, True))


@pytest.mark.parametrize("response", [
    StoreResponse(CTImageStorage, "1.2.3.4.5", 1, 0x0000),
    StoreResponse(CTImageStorage, "1.2.3.4", 65535, 0x0000),
    StoreResponse(CTImageStorage, "1.2.826.0.1.3680043.8.498.1" + "1" * 36, 7, 0x0000),
], ids=["odd", "even", "longest-uid"])
def test_the_response_command_set_is_what_pynetdicom_encodes(response: StoreResponse) -> None:
    assert encode_response(response) == pynetdicom_response(response)
