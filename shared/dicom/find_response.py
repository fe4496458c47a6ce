"""C-FIND responses (PS3.7 9.3.2.2) that carry a status and, while pending, an identifier: their command set
encoded by hand.

pynetdicom builds a pydicom Dataset for every response's command set and encodes it twice (once to measure the
group length): ~1 ms per pending response on this machine, more than the database query behind a 20-study
answer. A response with an Error Comment or an Offending Element keeps pynetdicom's path.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pynetdicom.dimse_primitives import C_FIND

from shared.dicom.command_encoding import command_set, element, uid, us

C_FIND_RSP = 0x8020
IDENTIFIER_PRESENT = 0x0001  # as pynetdicom writes it; any value but 0x0101 means present (PS3.7 E.1-1)
NO_IDENTIFIER = 0x0101


@dataclass(frozen=True)
class FindResponse:
    sop_class_uid: str
    message_id_being_responded_to: int
    status: int
    identifier: bytes | None  # encoded in the presentation context's transfer syntax


def encode_find_response(response: FindResponse) -> bytes:
    return command_set([
        element(0x0002, uid(response.sop_class_uid)),
        element(0x0100, us(C_FIND_RSP)),
        element(0x0120, us(response.message_id_being_responded_to)),
        element(0x0800, us(NO_IDENTIFIER if response.identifier is None else IDENTIFIER_PRESENT)),
        element(0x0900, us(response.status)),
    ])


def plain_find_response(primitive: Any) -> FindResponse | None:
    """The C-FIND response as its few values, if it carries nothing but a status and an identifier."""
    if primitive.__class__ is not C_FIND or primitive.MessageIDBeingRespondedTo is None or primitive.Status is None:
        return None
    if primitive.ErrorComment is not None or primitive.OffendingElement is not None:
        return None
    if primitive.AffectedSOPClassUID is None:
        return None
    identifier = primitive.Identifier
    if identifier is not None and (not isinstance(identifier, BytesIO) or not identifier.getbuffer().nbytes):
        return None
    return FindResponse(str(primitive.AffectedSOPClassUID), int(primitive.MessageIDBeingRespondedTo),
                        int(primitive.Status), None if identifier is None else identifier.getvalue())
