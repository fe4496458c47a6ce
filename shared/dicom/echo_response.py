"""The C-ECHO response (PS3.7 9.3.5.2) that carries only a status, encoded as the wire wants it (Implicit VR Little
Endian) without a pydicom Dataset: pynetdicom builds one per message and encodes it twice."""

from __future__ import annotations

from dataclasses import dataclass

from pynetdicom.sop_class import Verification

from shared.dicom.command_encoding import command_set, element, uid, us
from shared.dicom.command_set import NO_DATA_SET

C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
VERIFICATION = str(Verification)


@dataclass(frozen=True)
class EchoResponse:
    sop_class_uid: str
    message_id_being_responded_to: int
    status: int


def encode_echo_response(response: EchoResponse) -> bytes:
    return command_set([
        element(0x0002, uid(response.sop_class_uid)),
        element(0x0100, us(C_ECHO_RSP)),
        element(0x0120, us(response.message_id_being_responded_to)),
        element(0x0800, us(NO_DATA_SET)),
        element(0x0900, us(response.status)),
    ])
