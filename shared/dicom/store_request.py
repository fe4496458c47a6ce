"""C-STORE command sets (PS3.7 9.3.1.1 request, 9.3.1.2 response), encoded as the wire wants them: Implicit VR
Little Endian.

Built directly from the few values they need, without a pydicom Dataset: pynetdicom builds one per message and
encodes it twice (once to measure the group length). The request is what the mover sends for a stored object;
the response is the SCP's plain answer (a status and no other element) to every C-STORE it receives.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

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


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def _command_set(elements: list[bytes]) -> bytes:
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<I", len(body))) + body


def encode_command(request: StoreRequest) -> bytes:
    return _command_set([
        _element(0x0002, _uid(request.sop_class_uid)),
        _element(0x0100, _us(C_STORE_RQ)),
        _element(0x0110, _us(request.message_id)),
        _element(0x0700, _us(PRIORITY_MEDIUM)),
        _element(0x0800, _us(DATA_SET_PRESENT)),
        _element(0x1000, _uid(request.sop_instance_uid)),
    ])


@dataclass(frozen=True)
class StoreResponse:
    sop_class_uid: str
    sop_instance_uid: str
    message_id_being_responded_to: int
    status: int


def encode_response(response: StoreResponse) -> bytes:
    return _command_set([
        _element(0x0002, _uid(response.sop_class_uid)),
        _element(0x0100, _us(C_STORE_RSP)),
        _element(0x0120, _us(response.message_id_being_responded_to)),
        _element(0x0800, _us(NO_DATA_SET)),
        _element(0x0900, _us(response.status)),
        _element(0x1000, _uid(response.sop_instance_uid)),
    ])
