"""Received DIMSE command sets (PS3.7 6.3, E.1), decoded without a pydicom Dataset.

A command set is group 0000 in Implicit VR Little Endian: tag (group, element: 2 bytes each), value length
(4 bytes), value. ``decode`` returns the raw value of every element, or raises MalformedCommand for anything that is
not a plain run of such elements (the caller then leaves the message to pynetdicom, which decides what to answer).
"""

from __future__ import annotations

import struct

_ELEMENT_HEADER = struct.Struct("<HHL")
_US = struct.Struct("<H")

GROUP_LENGTH = 0x0000
AFFECTED_SOP_CLASS_UID = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
PRIORITY = 0x0700
COMMAND_DATA_SET_TYPE = 0x0800
AFFECTED_SOP_INSTANCE_UID = 0x1000
MOVE_ORIGINATOR_AE_TITLE = 0x1030
MOVE_ORIGINATOR_MESSAGE_ID = 0x1031
NO_DATA_SET = 0x0101
MAX_COMMAND_BYTES = 1 << 16  # far above any real command set; a larger one is left to pynetdicom


class MalformedCommand(ValueError):
    """Not a plain group-0000 command set."""


def decode(encoded: bytes) -> dict[int, bytes]:
    """Element number → raw value, for every element of the command set."""
    if len(encoded) > MAX_COMMAND_BYTES:
        raise MalformedCommand("command set too large")
    elements: dict[int, bytes] = {}
    offset, end = 0, len(encoded)
    previous = -1
    while offset < end:
        if end - offset < 8:
            raise MalformedCommand("an element header runs past the end")
        group, element, length = _ELEMENT_HEADER.unpack_from(encoded, offset)
        offset += 8
        if group != 0x0000 or element <= previous or length > end - offset:
            raise MalformedCommand("not an ascending run of group 0000 elements")
        elements[element] = encoded[offset:offset + length]
        offset += length
        previous = element
    return elements


def unsigned_short(elements: dict[int, bytes], element: int) -> int | None:
    value = elements.get(element)
    if value is None:
        return None
    if len(value) != 2:
        raise MalformedCommand("a US element is not 2 bytes long")
    return int(_US.unpack(value)[0])


def text(elements: dict[int, bytes], element: int) -> str | None:
    """An ASCII value (UI, AE) without its padding; MalformedCommand for anything else."""
    value = elements.get(element)
    if value is None:
        return None
    try:
        return value.decode("ascii").rstrip("\x00 ")
    except UnicodeDecodeError as exc:
        raise MalformedCommand("a text element is not ASCII") from exc
