"""Where the data set of a stored Part-10 object starts and how it is encoded, by the rules of pydicom's ``dcmread``
(preamble, File Meta in Explicit VR Little Endian, Transfer Syntax UID; a deflated data set inflated)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    PrivateTransferSyntaxes,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

from services.indexer.lean_errors import LeftToPydicom

PREAMBLE_LENGTH = 128
MAGIC = b"DICM"
TRANSFER_SYNTAX_UID = 0x00020010
UNDEFINED_LENGTH = 0xFFFFFFFF
EXPLICIT_HEADER_LE = struct.Struct("<HH2sH")
LONG_LENGTH_LE = struct.Struct("<L")
SHORT_LENGTH_VRS = {str(vr).encode(): str(vr) for vr in STANDARD_VR - EXPLICIT_VR_LENGTH_32}
LONG_LENGTH_VRS = {str(vr).encode(): str(vr) for vr in EXPLICIT_VR_LENGTH_32}


@dataclass(frozen=True)
class EncodedDataSet:
    transfer_syntax: str
    data: bytes  # holds the data set from ``start`` on: the object itself, or the inflated data set
    start: int
    implicit_vr: bool
    little_endian: bool
    complete: bool  # False when ``data`` is only the first part of the object


def _looks_implicit(vr: bytes) -> bool:
    """pydicom's test: an explicit VR is two capital letters."""
    return not (0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B)


def _file_meta(data: bytes) -> tuple[str, int]:
    """The Transfer Syntax UID and the offset after the File Meta elements (group 0002)."""
    pos = PREAMBLE_LENGTH + len(MAGIC)
    transfer_syntax: str | None = None
    first = True
    while len(data) - pos >= 8:
        group, element, vr_code, length = EXPLICIT_HEADER_LE.unpack_from(data, pos)
        if group != 0x0002:
            break
        if first and _looks_implicit(vr_code):
            raise LeftToPydicom("File Meta in implicit VR")
        first = False
        header = 8
        vr = SHORT_LENGTH_VRS.get(vr_code)
        if vr is None:
            vr = LONG_LENGTH_VRS.get(vr_code)
            if vr is None or len(data) - pos < 12:
                raise LeftToPydicom("File Meta element with an unknown VR")
            length = LONG_LENGTH_LE.unpack_from(data, pos + 8)[0]
            header = 12
        if length == UNDEFINED_LENGTH or pos + header + length > len(data):
            raise LeftToPydicom("File Meta element of undefined length or cut short")
        if group << 16 | element == TRANSFER_SYNTAX_UID:
            if vr != "UI":
                raise LeftToPydicom("Transfer Syntax UID not encoded as UI")
            value = data[pos + header:pos + header + length].decode("latin-1").rstrip("\x00 ").rstrip(" \x00").strip()
            if "\\" in value:
                raise LeftToPydicom("several Transfer Syntax UIDs")
            transfer_syntax = value
        pos += header + length
    if transfer_syntax is None:
        raise LeftToPydicom("no Transfer Syntax UID")
    return transfer_syntax, pos


def locate_data_set(data: bytes, complete: bool = True) -> EncodedDataSet:
    """The encoded data set of a Part-10 object (``complete`` False: ``data`` is the object's first bytes only)."""
    if data[PREAMBLE_LENGTH:PREAMBLE_LENGTH + len(MAGIC)] != MAGIC:
        raise LeftToPydicom("no Part-10 preamble")
    transfer_syntax, start = _file_meta(data)
    if len(data) - start < 8:
        raise LeftToPydicom("no data set, or one shorter than an element")
    if data[start:start + 2] == b"\x00\x00":
        raise LeftToPydicom("command set elements in the object")
    if transfer_syntax in PrivateTransferSyntaxes:
        raise LeftToPydicom("a private transfer syntax")
    if transfer_syntax == ImplicitVRLittleEndian:
        return EncodedDataSet(transfer_syntax, data, start, True, True, complete)
    if transfer_syntax == ExplicitVRBigEndian:
        return EncodedDataSet(transfer_syntax, data, start, False, False, complete)
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        if not complete:
            raise LeftToPydicom("deflated data set known only in part")
        try:
            inflated = zlib.decompress(data[start:], -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise LeftToPydicom("deflated data set does not inflate") from exc
        return EncodedDataSet(transfer_syntax, inflated, 0, False, True, True)
    return EncodedDataSet(transfer_syntax, data, start, False, True, complete)  # explicit VR LE, encapsulated too
