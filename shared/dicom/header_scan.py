"""The raw values of a few top-level elements at the start of a Little Endian data set, read without pydicom.

Ingest needs six short values from the head of every received data set (shared.ingest_identify). pydicom's
``read_dataset`` builds a Dataset and an element object for everything before them (~160 µs for a small CT);
this walks the element headers and slices out the wanted values (~20 µs). It knows Implicit VR Little Endian and
Explicit VR Little Endian (the native and every encapsulated syntax), skips sequences of defined and undefined
length (and UN of undefined length, whose content is Implicit VR), and raises NotPlain for anything else: an
unknown VR, a length running past the data, a malformed sequence. The caller then asks pydicom, which has the
final word on damaged input.
"""

from __future__ import annotations

import struct

_TAG_AND_LENGTH = struct.Struct("<HHL")  # implicit VR: group, element, 4-byte length
_EXPLICIT_SHORT = struct.Struct("<HH2sH")  # explicit VR: group, element, VR, 2-byte length
_LONG_LENGTH = struct.Struct("<L")
UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
# PS3.5 7.1.2: these VRs have 2 reserved bytes and a 4-byte length.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
                        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})
_MAX_DEPTH = 16


class NotPlain(ValueError):
    """The data set holds something this reader does not handle; ask pydicom instead."""


def scan(data: bytes, explicit_vr: bool, wanted: frozenset[int], stop_after: int) -> dict[int, bytes]:
    """The raw values of the ``wanted`` top-level tags (group << 16 | element) found before a tag greater than
    ``stop_after``."""
    values: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        tag, length, value_at, kind = _header(data, offset, end, explicit_vr)
        if tag > stop_after:
            break
        if length == UNDEFINED:  # an undefined-length UN holds Implicit VR Little Endian (PS3.5 6.2.2)
            offset = _skip_undefined(data, value_at, end, explicit_vr and kind != "UN", 1)
            continue
        offset = value_at + length
        if offset > end:
            raise NotPlain("an element runs past the end of the data set")
        if tag in wanted:
            values[tag] = data[value_at:offset]
    return values


def _header(data: bytes, offset: int, end: int, explicit_vr: bool) -> tuple[int, int, int, str]:
    """(tag, value length, offset of the value, "SQ"/"UN"/"" for what an undefined length would hold)."""
    if offset + 8 > end:
        raise NotPlain("an element header runs past the end of the data set")
    if not explicit_vr:
        group, element, length = _TAG_AND_LENGTH.unpack_from(data, offset)
        return (group << 16) | element, length, offset + 8, "SQ"
    group, element, vr, length = _EXPLICIT_SHORT.unpack_from(data, offset)
    tag = (group << 16) | element
    if group == 0xFFFE:  # item and delimiter tags carry no VR
        return tag, _LONG_LENGTH.unpack_from(data, offset + 4)[0], offset + 8, ""
    if vr in _SHORT_VRS:
        return tag, length, offset + 8, ""
    if vr not in _LONG_VRS:
        raise NotPlain("an unknown VR")
    if offset + 12 > end:
        raise NotPlain("an element header runs past the end of the data set")
    long_length = _LONG_LENGTH.unpack_from(data, offset + 8)[0]
    if long_length == UNDEFINED and vr not in (b"SQ", b"UN"):
        raise NotPlain("an undefined length outside a sequence")
    return tag, long_length, offset + 12, vr.decode("ascii")


def _skip_undefined(data: bytes, offset: int, end: int, explicit_vr: bool, depth: int) -> int:
    """The offset just after the sequence delimitation item of an undefined-length sequence starting at
    ``offset``."""
    if depth > _MAX_DEPTH:
        raise NotPlain("sequences nested too deep")
    while True:
        tag, length = _item_header(data, offset, end)
        offset += 8
        if tag == SEQUENCE_END:
            return offset
        if tag != ITEM:
            raise NotPlain("a sequence holds something other than items")
        if length != UNDEFINED:
            offset += length
            continue
        offset = _skip_item_content(data, offset, end, explicit_vr, depth)


def _skip_item_content(data: bytes, offset: int, end: int, explicit_vr: bool, depth: int) -> int:
    """The offset just after the item delimitation item of an undefined-length item starting at ``offset``."""
    while True:
        tag, length, value_at, kind = _header(data, offset, end, explicit_vr)
        if tag == ITEM_END:
            return value_at
        if length == UNDEFINED:
            offset = _skip_undefined(data, value_at, end, explicit_vr and kind != "UN", depth + 1)
        else:
            offset = value_at + length
            if offset > end:
                raise NotPlain("an element runs past the end of an item")


def _item_header(data: bytes, offset: int, end: int) -> tuple[int, int]:
    if offset + 8 > end:
        raise NotPlain("a sequence runs past the end of the data set")
    group, element, length = _TAG_AND_LENGTH.unpack_from(data, offset)
    return (group << 16) | element, length
