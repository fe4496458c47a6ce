"""Part-10 files as the node stores them: zeroed preamble, our own File Meta, the dataset bytes unchanged.

The File Meta is a pure function of the instance's identity and transfer syntax, so the same dataset always
becomes the same object (re-sending it is recognised as identical by its hash).
"""

from __future__ import annotations

import struct
from typing import BinaryIO

IMPLEMENTATION_CLASS_UID = "2.25.336836901436135367680934814653349959270"
IMPLEMENTATION_VERSION_NAME = "PACSNODE_010"
PREAMBLE = b"\x00" * 128 + b"DICM"


def _padded(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def _short_element(element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def encode_file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """File Meta Information (PS3.10 7.1), group length first, Explicit VR Little Endian."""
    body = b"".join(
        (
            struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
            _short_element(0x0002, b"UI", _padded(sop_class_uid, b"\x00")),
            _short_element(0x0003, b"UI", _padded(sop_instance_uid, b"\x00")),
            _short_element(0x0010, b"UI", _padded(transfer_syntax_uid, b"\x00")),
            _short_element(0x0012, b"UI", _padded(IMPLEMENTATION_CLASS_UID, b"\x00")),
            _short_element(0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
        )
    )
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def encode_part10(dataset: bytes, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    return PREAMBLE + encode_file_meta(sop_class_uid, sop_instance_uid, transfer_syntax_uid) + dataset


class NotOurPart10(ValueError):
    """The object does not start with a preamble and a File Meta group length, as the node writes them."""


def skip_file_meta(stream: BinaryIO) -> None:
    """Position ``stream`` (at the start of a stored object) at its first data set byte."""
    head = stream.read(len(PREAMBLE) + 12)
    if len(head) != len(PREAMBLE) + 12 or head[128:132] != b"DICM":
        raise NotOurPart10("no Part-10 preamble")
    group, element, vr, length, group_length = struct.unpack("<HH2sHI", head[len(PREAMBLE):])
    if (group, element, vr, length) != (0x0002, 0x0000, b"UL", 4):
        raise NotOurPart10("no File Meta group length")
    meta = stream.read(group_length)
    if len(meta) != group_length:
        raise NotOurPart10("truncated File Meta")
