"""The C-ECHO response encoded by hand is byte for byte what pynetdicom encodes for the same values."""

from __future__ import annotations

import pytest
from pynetdicom.dimse_messages import C_ECHO_RSP
from pynetdicom.dimse_primitives import C_ECHO
from pynetdicom.dsutils import encode

from shared.dicom.echo_response import VERIFICATION, EchoResponse, encode_echo_response


def pynetdicom_response(response: EchoResponse) -> bytes:
    primitive = C_ECHO()
    primitive.MessageIDBeingRespondedTo = response.message_id_being_responded_to
    primitive.AffectedSOPClassUID = response.sop_class_uid
    primitive.Status = response.status
    message = C_ECHO_RSP()
    message.primitive_to_message(primitive)
    return bytes(encode(message.command_set, True, True))


@pytest.mark.parametrize("response", [
    EchoResponse(VERIFICATION, 1, 0x0000),
    EchoResponse(VERIFICATION, 65535, 0x0124),
    EchoResponse(VERIFICATION, 7, 0x0110),
], ids=["success", "refused", "processing failure"])
def test_the_response_command_set_is_what_pynetdicom_encodes(response: EchoResponse) -> None:
    assert encode_echo_response(response) == pynetdicom_response(response)
