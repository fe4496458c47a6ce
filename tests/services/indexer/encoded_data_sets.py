"""Data sets encoded element by element, as any writer might encode them (for comparing the indexer's lean reader
with pydicom): any bytes as a value, defined or undefined lengths, Implicit or Explicit VR, either byte order."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from shared.dicom.part10 import encode_part10

SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
LONG_LENGTH_VRS = {str(vr) for vr in EXPLICIT_VR_LENGTH_32}


@dataclass(frozen=True)
class Item:
    elements: list[Element] = field(default_factory=list)
    undefined_length: bool = False


@dataclass(frozen=True)
class Element:
    tag: int
    vr: str
    value: bytes | list[Item] = b""  # the items of a sequence
    undefined_length: bool = False  # sequences only


def _header(tag: int, vr: str, length: int, implicit: bool, endian: str) -> bytes:
    group_and_element = struct.pack(endian + "HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return group_and_element + struct.pack(endian + "L", length)
    if vr in LONG_LENGTH_VRS:
        return group_and_element + vr.encode() + b"\x00\x00" + struct.pack(endian + "L", length)
    return group_and_element + vr.encode() + struct.pack(endian + "H", length)


def _delimiter(tag: tuple[int, int], length: int, endian: str) -> bytes:
    return struct.pack(endian + "HHL", *tag, length)


def encode_elements(elements: list[Element], implicit: bool, little: bool) -> bytes:
    """The elements in the order given (sort them for a valid data set)."""
    endian = "<" if little else ">"
    out = bytearray()
    for element in elements:
        if isinstance(element.value, list):
            body = b"".join(_encode_item(item, implicit, little) for item in element.value)
            if element.undefined_length:
                out += _header(element.tag, "SQ", UNDEFINED, implicit, endian) + body
                out += _delimiter(SEQUENCE_END, 0, endian)
            else:
                out += _header(element.tag, "SQ", len(body), implicit, endian) + body
        else:
            out += _header(element.tag, element.vr, len(element.value), implicit, endian) + element.value
    return bytes(out)


def _encode_item(item: Item, implicit: bool, little: bool) -> bytes:
    endian = "<" if little else ">"
    body = encode_elements(sorted(item.elements, key=lambda e: e.tag), implicit, little)
    if item.undefined_length:
        return _delimiter(ITEM, UNDEFINED, endian) + body + _delimiter(ITEM_END, 0, endian)
    return _delimiter(ITEM, len(body), endian) + body


def part10_object(elements: list[Element], transfer_syntax: str, sort: bool = True) -> bytes:
    """A Part-10 object as the node stores it: our File Meta, then the data set in ``transfer_syntax``."""
    ordered = sorted(elements, key=lambda e: e.tag) if sort else elements
    implicit = transfer_syntax == ImplicitVRLittleEndian
    data_set = encode_elements(ordered, implicit, transfer_syntax != ExplicitVRBigEndian)
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        data_set = compressor.compress(data_set) + compressor.flush()
    return encode_part10(data_set, "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4.5.6", transfer_syntax)


def text(tag: int, vr: str, value: str, encoding: str = "latin-1") -> Element:
    """A text element padded to an even length (UI with a NUL, others with a space)."""
    encoded = value.encode(encoding)
    if len(encoded) % 2:
        encoded += b"\x00" if vr == "UI" else b" "
    return Element(tag, vr, encoded)


def identifying(study: str = "1.2.3", series: str = "1.2.3.4", sop: str = "1.2.3.4.5") -> list[Element]:
    """The UIDs every indexable object has."""
    return [text(0x00080016, "UI", "1.2.840.10008.5.1.4.1.1.7"), text(0x00080018, "UI", sop),
            text(0x0020000D, "UI", study), text(0x0020000E, "UI", series)]
