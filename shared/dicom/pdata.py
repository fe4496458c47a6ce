"""The items of a received P-DATA-TF PDU (PS3.8 9.3.5, E.2), parsed without building pynetdicom objects.

A P-DATA-TF body is a run of presentation data value items: item length (4 bytes, big endian), presentation
context ID (1 byte), message control header (1 byte: bit 0 set for a command fragment, bit 1 set for the last
fragment of the command or data set) and the fragment itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_ITEM_HEADER = struct.Struct(">LBB")
ITEM_HEADER_LENGTH = 4  # the item length field; the context ID and control header count in the item length
COMMAND = 0x01
LAST = 0x02


class MalformedPData(ValueError):
    """The PDU body is not a run of well-formed presentation data value items."""


@dataclass(frozen=True, slots=True)
class Fragment:
    context_id: int
    control: int
    data: memoryview
    item: memoryview  # the whole item, header included: handed on as received when the message is not ours

    @property
    def is_command(self) -> bool:
        return bool(self.control & COMMAND)

    @property
    def is_last(self) -> bool:
        return bool(self.control & LAST)


def fragments(body: bytes | bytearray | memoryview) -> list[Fragment]:
    """The PDV items of a P-DATA-TF PDU body (after its 6-byte PDU header), in order."""
    view = memoryview(body)
    items: list[Fragment] = []
    offset, end = 0, len(view)
    if end == 0:
        raise MalformedPData("a P-DATA-TF PDU without any item")
    while offset < end:
        if end - offset < ITEM_HEADER_LENGTH + 2:
            raise MalformedPData("an item header runs past the end of the PDU")
        length, context_id, control = _ITEM_HEADER.unpack_from(view, offset)
        item_end = offset + ITEM_HEADER_LENGTH + length
        if length < 2 or item_end > end:
            raise MalformedPData("an item length does not fit the PDU")
        if control & ~(COMMAND | LAST):
            raise MalformedPData("reserved bits of a message control header are set")
        items.append(Fragment(context_id, control, view[offset + ITEM_HEADER_LENGTH + 2:item_end],
                              view[offset:item_end]))
        offset = item_end
    return items


def p_data_tf(items: list[bytes | memoryview]) -> bytes:
    """A whole P-DATA-TF PDU (header included) carrying ``items`` as they are."""
    body = b"".join(items)
    return struct.pack(">BBL", 0x04, 0x00, len(body)) + body
