"""Our C-STORE request command set is byte for byte what pynetdicom encodes for the same request."""

from __future__ import annotations

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from shared.dicom.store_request import StoreRequest, encode_command


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
