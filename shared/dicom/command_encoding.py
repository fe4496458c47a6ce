"""DIMSE command set elements as the wire wants them (Implicit VR Little Endian, group 0000), built from plain
values without a pydicom Dataset (PS3.7 E.1)."""

from __future__ import annotations

import struct


def element(tag_element: int, value: bytes) -> bytes:
    """A command element (0000,``tag_element``) with its encoded value."""
    return struct.pack("<HHI", 0x0000, tag_element, len(value)) + value


def uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def command_set(elements: list[bytes]) -> bytes:
    """The elements, in tag order, after their Command Group Length (0000,0000)."""
    body = b"".join(elements)
    return element(0x0000, struct.pack("<I", len(body))) + body
