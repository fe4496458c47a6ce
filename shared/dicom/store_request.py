"""C-STORE command sets (PS3.7 9.3.1.1 request, 9.3.1.2 response), encoded as the wire wants them: Implicit VR
Little Endian.

Built directly from the few values they need, without a pydicom Dataset: pynetdicom builds one per message and
encodes it twice (once to measure the group length). The request is what the mover sends for a stored object;
the response is the SCP's plain answer (a status and no other element) to every C-STORE it receives.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.dicom.command_encoding import command_set, element, uid, us

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
PRIORITY_MEDIUM = 0x0000
DATA_SET_PRESENT = 0x0000  # anything but 0x0101 (PS3.7 E.1-1)
NO_DATA_SET = 0x0101


@dataclass(frozen=True)
class StoreRequest:
    sop_class_uid: str
    sop_instance_uid: str
    message_id: int


def encode_command(request: StoreRequest) -> bytes:
    return command_set([
        element(0x0002, uid(request.sop_class_uid)),
        element(0x0100, us(C_STORE_RQ)),
        element(0x0110, us(request.message_id)),
        element(0x0700, us(PRIORITY_MEDIUM)),
        element(0x0800, us(DATA_SET_PRESENT)),
        element(0x1000, uid(request.sop_instance_uid)),
    ])


@dataclass(frozen=True)
class StoreResponse:
    sop_class_uid: str
    sop_instance_uid: str
    message_id_being_responded_to: int
    status: int


def encode_response(response: StoreResponse) -> bytes:
    return command_set([
        element(0x0002, uid(response.sop_class_uid)),
        element(0x0100, us(C_STORE_RSP)),
        element(0x0120, us(response.message_id_being_responded_to)),
        element(0x0800, us(NO_DATA_SET)),
        element(0x0900, us(response.status)),
        element(0x1000, uid(response.sop_instance_uid)),
    ])
