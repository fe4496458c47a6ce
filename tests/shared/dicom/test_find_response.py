"""Our C-FIND response command sets are byte for byte what pynetdicom encodes for the same values; a response
with error details is left to pynetdicom."""

from __future__ import annotations

from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind

from shared.dicom.find_response import encode_find_response, plain_find_response


def primitive(status: int, identifier: bytes | None, message_id: int = 7,
              sop_class: str = StudyRootQueryRetrieveInformationModelFind) -> C_FIND:
    response = C_FIND()
    response.MessageIDBeingRespondedTo = message_id
    response.AffectedSOPClassUID = sop_class
    response.Status = status
    if identifier is not None:
        response.Identifier = BytesIO(identifier)
    return response


def pynetdicom_command(response: C_FIND) -> bytes:
    message = C_FIND_RSP()
    message.primitive_to_message(response)
    return bytes(encode(message.command_set, True, True))


@pytest.mark.parametrize("status, identifier, message_id, sop_class", [
    (0xFF00, b"\x08\x00\x52\x00\x06\x00STUDY ", 7, StudyRootQueryRetrieveInformationModelFind),  # pending
    (0xFF01, b"\x08\x00\x52\x00\x06\x00STUDY ", 65535, PatientRootQueryRetrieveInformationModelFind),
    (0x0000, None, 1, StudyRootQueryRetrieveInformationModelFind),  # final
    (0xFE00, None, 2, StudyRootQueryRetrieveInformationModelFind),  # cancelled
], ids=["pending", "pending-optional-keys", "success", "cancel"])
def test_the_command_set_is_what_pynetdicom_encodes(status: int, identifier: bytes | None, message_id: int,
                                                    sop_class: str) -> None:
    response = primitive(status, identifier, message_id, sop_class)
    plain = plain_find_response(response)
    assert plain is not None and plain.identifier == identifier
    assert encode_find_response(plain) == pynetdicom_command(response)


def test_a_response_with_error_details_is_left_to_pynetdicom() -> None:
    failed = primitive(0xA900, None)
    failed.ErrorComment = "query level not in this information model"
    assert plain_find_response(failed) is None
    offending = primitive(0xC000, None)
    offending.OffendingElement = [0x00100010]
    assert plain_find_response(offending) is None
