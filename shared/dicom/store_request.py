"""The command set of a C-STORE request (PS3.7 9.3.1.1), encoded as the wire wants it: Implicit VR Little Endian.

Built directly from the few values a C-STORE of a stored object needs, without a pydicom Dataset: pynetdicom
builds one per message and encodes it twice (once to measure the group length).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

C_STORE_RQ = 0x0001
PRIORITY_MEDIUM = 0x0000
DATA_SET_PRESENT = 0x0000  # anything but 0x0101 (PS3.7 E.1-1)


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


def encode_command(request: StoreRequest) -> bytes:
    elements = [
        _element(0x0002, _uid(request.sop_class_uid)),
        _element(0x0100, _us(C_STORE_RQ)),
        _element(0x0110, _us(request.message_id)),
        _element(0x0700, _us(PRIORITY_MEDIUM)),
        _element(0x0800, _us(DATA_SET_PRESENT)),
        _element(0x1000, _uid(request.sop_instance_uid)),
    ]
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<I", len(body))) + body
