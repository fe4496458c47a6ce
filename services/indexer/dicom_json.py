"""The DICOM JSON model of a stored object's data set, read straight from its bytes: the attributes that C-FIND and
QIDO-RS match on and answer with, without building a pydicom Dataset.

The result equals what services/indexer/pydicom_record.py gets from ``dcmread(stop_before_pixels=True)`` and
``to_json_dict`` (tests/services/indexer/test_dicom_json.py compares them). The walk follows pydicom's reading
rules (tags in order, VRs from the stream or, for Implicit VR, from the dictionaries; sequences and items of defined
or undefined length; the Specific Character Set of the data set). Whatever it does not reproduce exactly raises
LeftToPydicom, and the caller reads that object with pydicom: elements out of order or repeated, an Explicit VR
item written in Implicit VR, a UN element that pydicom reads as a sequence, an ambiguous VR (US or SS, OB or OW)
inside a sequence or before the Pixel Representation, a character set set inside an item, an undefined length
outside a sequence, truncated or overlapping lengths, nesting deeper than MAX_DEPTH.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.valuerep import AMBIGUOUS_VR
from pydicom.values import convert_string

from services.indexer.json_values import (
    BINARY_VRS,
    LUT_DESCRIPTORS,
    NUMBER_FORMATS,
    JsonElement,
    convert,
    decode_text,
    element_text,
    numbers,
)
from services.indexer.lean_errors import DropElement, LeftToPydicom
from services.indexer.part10_header import (
    LONG_LENGTH_VRS,
    SHORT_LENGTH_VRS,
    UNDEFINED_LENGTH,
    EncodedDataSet,
)

ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # where dcmread(stop_before_pixels) stops
SPECIFIC_CHARACTER_SET = 0x00080005
PIXEL_REPRESENTATION = 0x00280103
US_OR_SS = "US or SS"
DEFAULT_ENCODINGS = ("iso8859",)
ITEM_SPECIAL_TAGS = frozenset({SPECIFIC_CHARACTER_SET, PIXEL_REPRESENTATION, *LUT_DESCRIPTORS})
LAST_ORDINARY_TAG = min(PIXEL_DATA_TAGS)  # pixel data and the item delimiter are at or above it
EXPLICIT_VRS = {**{code: (vr, False) for code, vr in SHORT_LENGTH_VRS.items()},
                **{code: (vr, True) for code, vr in LONG_LENGTH_VRS.items()}}
MAX_DEPTH = 32
PRIVATE_CREATOR_MAX_LENGTH = 64
CACHE_LIMIT = 4096

_dictionary_vrs: dict[int, str | None] = {}
_keys: dict[int, str] = {}
_encodings_of_value: dict[bytes, tuple[str, ...]] = {}


@dataclass(frozen=True)
class LeanDataSet:
    attributes: dict[str, JsonElement]
    attributes_json: str  # the text json.dumps gives for ``attributes``
    top_level: dict[int, tuple[str, bytes]]  # (VR, encoded value) of the top-level elements asked for
    encodings: tuple[str, ...]  # the Python encodings of the top-level Specific Character Set


def _dictionary_vr(tag: int) -> str | None:
    vr = _dictionary_vrs.get(tag, "")
    if vr == "":
        try:
            vr = str(dictionary_VR(tag))
        except KeyError:
            vr = None
        if len(_dictionary_vrs) < CACHE_LIMIT:
            _dictionary_vrs[tag] = vr
    return vr


def _key(tag: int) -> str:
    """The attribute's key in the DICOM JSON model: its tag in 8 hexadecimal digits."""
    key = _keys.get(tag)
    if key is None:
        key = f"{tag:08X}"
        if len(_keys) < CACHE_LIMIT:
            _keys[tag] = key
    return key


def _object_text(member_texts: list[str]) -> str:
    return f"{{{', '.join(member_texts)}}}"


def _sequence_text(item_texts: list[str]) -> str:
    return f'{{"vr": "SQ", "Value": [{", ".join(item_texts)}]}}'


def encodings_of(value: bytes) -> tuple[str, ...]:
    """Python encodings of a Specific Character Set value, as dcmread derives them (lenient: unknown terms warn)."""
    encodings = _encodings_of_value.get(value)
    if encodings is None:
        terms = convert_string(value, True) if value else ""
        encodings = tuple(convert_encodings(list(terms) if not isinstance(terms, str) else terms))
        if len(_encodings_of_value) < CACHE_LIMIT:
            _encodings_of_value[value] = encodings
    return encodings


class _Walker:
    def __init__(self, encoded: EncodedDataSet, wanted: frozenset[int]) -> None:
        self.data = encoded.data
        self.implicit = encoded.implicit_vr
        self.little = encoded.little_endian
        self.complete = encoded.complete
        endian = "<" if encoded.little_endian else ">"
        self.explicit_header = struct.Struct(endian + "HH2sH").unpack_from
        self.implicit_header = struct.Struct(endian + "HHL").unpack_from  # also the header of items and delimiters
        self.long_length = struct.Struct(endian + "L").unpack_from
        self.wanted = wanted
        self.top_level: dict[int, tuple[str, bytes]] = {}
        self.encodings = DEFAULT_ENCODINGS
        self.pixel_representation: bytes | None = None  # of the top-level data set, once read
        self.top_level_special = ITEM_SPECIAL_TAGS | wanted

    def data_set(self, pos: int, end: int, encodings: tuple[str, ...], depth: int, top: bool,
                 undefined_item: bool) -> tuple[dict[str, JsonElement], str, int, bool]:
        """(attributes, their JSON text, position after the data set, whether an element refused by strict reading
        is inside).

        ``end`` is where a defined-length data set ends, or the limit an undefined-length item must end before.
        """
        if depth > MAX_DEPTH:
            raise LeftToPydicom("nesting too deep")
        data, little, implicit = self.data, self.little, self.implicit
        special = self.top_level_special if top else ITEM_SPECIAL_TAGS
        attributes: dict[str, JsonElement] = {}
        texts: list[str] = []  # '"key": element' in the order of ``attributes``
        creators: dict[int, tuple[str, int, int]] = {}  # private creator tag: (VR, value start, value end)
        refused = False
        previous = -1
        self._check_first_element(pos, end, top)
        while True:
            if end - pos < 8:
                if top and self.complete:
                    return attributes, _object_text(texts), pos, refused  # dcmread ignores fewer than 8 bytes
                if pos == end and not top and not undefined_item:
                    return attributes, _object_text(texts), pos, refused
                raise LeftToPydicom("data set cut short")
            if implicit:
                group, element, length = self.implicit_header(data, pos)
            else:
                group, element, vr_code, length = self.explicit_header(data, pos)
            tag = group << 16 | element
            if tag >= LAST_ORDINARY_TAG:
                if tag == ITEM_END:
                    if not undefined_item:
                        raise LeftToPydicom("item delimiter outside an undefined-length item")
                    return attributes, _object_text(texts), pos + 8, refused
                if top and tag in PIXEL_DATA_TAGS:
                    return attributes, _object_text(texts), pos, refused
            if implicit:
                vr: str | None = None
                pos += 8
            else:
                explicit = EXPLICIT_VRS.get(vr_code)
                if explicit is None:
                    raise LeftToPydicom("unknown VR")
                vr, long_length = explicit
                if long_length:
                    if end - pos < 12:
                        raise LeftToPydicom("data set cut short")
                    length = self.long_length(data, pos + 8)[0]
                    pos += 12
                else:
                    pos += 8
            if tag <= previous:
                raise LeftToPydicom("elements out of order or repeated")
            previous = tag
            try:
                if length == UNDEFINED_LENGTH:
                    if vr is None:
                        vr = self._undefined_length_vr(tag, pos)
                    if vr != "SQ":
                        raise LeftToPydicom("undefined length outside a sequence")
                    items, item_texts, pos, items_refused = self.items(pos, None, end, encodings, depth + 1)
                    if items_refused:
                        raise DropElement
                    key = _key(tag)
                    attributes[key] = {"vr": "SQ", "Value": items}
                    texts.append(f'"{key}": {_sequence_text(item_texts)}')
                    continue
                value_start = pos
                pos += length
                if pos > end:
                    raise LeftToPydicom("value longer than its data set")
                if vr is None or vr == "UN":
                    vr = self._vr_read_by_pydicom(tag, vr, length, creators, encodings)
                    if vr in AMBIGUOUS_VR:
                        key = _key(tag)
                        attributes[key] = element = self._us_or_ss(tag, vr, data[value_start:pos], top)
                        texts.append(f'"{key}": {element_text(element)}')
                        continue
                if group & 1 and 0x10 <= element < 0x100:
                    creators[tag] = (vr, value_start, pos)
                if vr == "SQ":
                    items, item_texts, _, items_refused = self.items(value_start, pos, pos, encodings, depth + 1)
                    if items_refused:
                        raise DropElement
                    key = _key(tag)
                    attributes[key] = {"vr": "SQ", "Value": items}
                    texts.append(f'"{key}": {_sequence_text(item_texts)}')
                    continue
                value = data[value_start:pos]
                if tag in special:
                    encodings = self._special(tag, vr, value, top, encodings)
                element, text = convert(vr, value, encodings, little, tag, tag not in LUT_DESCRIPTORS)
                key = _keys.get(tag) or _key(tag)
                attributes[key] = element
                texts.append(f'"{key}": {text}')
            except DropElement:
                if not top:
                    refused = True  # the whole top-level sequence holding it is left out

    def _check_first_element(self, pos: int, end: int, top: bool) -> None:
        """pydicom decides from a data set's first element whether it is in Implicit VR (``_is_implicit_vr``): at
        the top level either way, in an Explicit VR item only towards Implicit VR. Such switches are its own."""
        if end - pos < 8 or (not top and self.implicit):
            return
        tag = self.implicit_header(self.data, pos)
        tag_value = tag[0] << 16 | tag[1]
        if tag_value == ITEM_END or (top and tag_value in PIXEL_DATA_TAGS):
            return
        looks_implicit = not (0x40 < self.data[pos + 4] < 0x5B and 0x40 < self.data[pos + 5] < 0x5B)
        if looks_implicit != self.implicit:
            raise LeftToPydicom("VR encoding other than the transfer syntax's")

    def _special(self, tag: int, vr: str, value: bytes, top: bool,
                 encodings: tuple[str, ...]) -> tuple[str, ...]:
        """What an element read besides its JSON means: the character set of the data set, the Pixel Representation
        that resolves later 'US or SS' VRs, a record column's value. Returns the encodings from here on."""
        if tag == SPECIFIC_CHARACTER_SET:
            if vr != "CS" or not top:
                raise LeftToPydicom("Specific Character Set in an item or not encoded as CS")
            encodings = self.encodings = encodings_of(value)
        elif tag == PIXEL_REPRESENTATION:
            if vr != "US" or len(value) not in (0, 2):
                raise LeftToPydicom("Pixel Representation that strict reading refuses")
            if top:
                self.pixel_representation = value
        elif tag in LUT_DESCRIPTORS and vr not in NUMBER_FORMATS and vr not in BINARY_VRS:
            raise LeftToPydicom("LUT descriptor that is no binary number")
        if top and tag in self.wanted:
            self.top_level[tag] = (vr, value)
        return encodings

    def items(self, pos: int, end: int | None, limit: int, encodings: tuple[str, ...],
              depth: int) -> tuple[list[dict[str, JsonElement]], list[str], int, bool]:
        """The items of a sequence that starts at ``pos`` and ends at ``end`` (None: at its delimiter, before
        ``limit``), with their JSON texts."""
        data = self.data
        items: list[dict[str, JsonElement]] = []
        texts: list[str] = []
        refused = False
        while True:
            if end is not None and pos == end:
                return items, texts, pos, refused
            if limit - pos < 8:
                raise LeftToPydicom("sequence cut short")
            group, element, length = self.implicit_header(data, pos)
            tag = group << 16 | element
            pos += 8
            if tag == SEQUENCE_END:
                if end is not None:
                    raise LeftToPydicom("sequence delimiter in a defined-length sequence")
                return items, texts, pos, refused
            if tag != ITEM:
                raise LeftToPydicom("sequence element that is no item")
            if length == UNDEFINED_LENGTH:
                item, text, pos, item_refused = self.data_set(pos, limit, encodings, depth, False, True)
            else:
                if pos + length > limit:
                    raise LeftToPydicom("item longer than its sequence")
                item, text, pos, item_refused = self.data_set(pos, pos + length, encodings, depth, False, False)
            items.append(item)
            texts.append(text)
            refused = refused or item_refused

    def _undefined_length_vr(self, tag: int, pos: int) -> str | None:
        """Implicit VR, undefined length: a sequence by the dictionary, or (unknown tag) when an item follows."""
        vr = _dictionary_vr(tag)
        if vr is None:
            if len(self.data) - pos < 8:
                raise LeftToPydicom("undefined length at the end of the data")
            group, element, _ = self.implicit_header(self.data, pos)
            vr = "SQ" if group << 16 | element == ITEM else None
        return vr

    def _vr_read_by_pydicom(self, tag: int, stream_vr: str | None, length: int,
                            creators: dict[int, tuple[str, int, int]], encodings: Sequence[str]) -> str:
        """The VR pydicom reads an Implicit VR element (None) or an Explicit VR UN element with
        (hooks.raw_element_vr): from the dictionary, for a private tag from its creator and the private dictionary."""
        element = tag & 0xFFFF
        if tag >> 16 & 1:
            if 0x10 <= element < 0x100:
                return "LO"  # a private creator
            return self._private_vr(tag, creators, encodings) if element & 0xFF00 else "UN"
        if stream_vr == "UN" and length >= 0xFFFF:
            return "UN"
        vr = _dictionary_vr(tag)
        if vr is not None:
            return vr
        if stream_vr == "UN":
            return "UN"
        if element == 0:
            return "UL"  # a group length
        raise DropElement  # strict reading refuses a public tag it does not know

    def _private_vr(self, tag: int, creators: dict[int, tuple[str, int, int]], encodings: Sequence[str]) -> str:
        creator_tag = (tag & 0xFFFF0000) | (tag & 0xFFFF) >> 8
        found = creators.get(creator_tag)
        if found is None:
            return "UN"
        creator_vr, start, end = found
        try:
            text = decode_text(self.data[start:end], encodings) if creator_vr == "LO" else None
        except Exception:
            text = None
        if text is None or "\\" in text or len(text) > PRIVATE_CREATOR_MAX_LENGTH:
            raise LeftToPydicom("private creator that strict reading refuses")
        try:
            vr = str(private_dictionary_VR(tag, text.rstrip("\x00 ")))
        except KeyError:
            return "UN"
        if vr in AMBIGUOUS_VR:
            raise LeftToPydicom("ambiguous VR of a private tag")
        return vr

    def _us_or_ss(self, tag: int, vr: str, value: bytes, top: bool) -> JsonElement:
        """pydicom's correction of a 'US or SS' value (Implicit VR, top level): signed when the Pixel Representation
        read before it says so; the value is then set again, and a LUT descriptor's first value validated as US."""
        if vr != US_OR_SS or not top or tag < PIXEL_REPRESENTATION:
            raise LeftToPydicom("ambiguous VR that pydicom resolves from context")
        representation = self.pixel_representation
        signed = representation is not None and not (representation and not any(representation))
        corrected = "SS" if signed else "US"  # no Pixel Representation (and no Pixel Data): US
        if not value:
            return {"vr": corrected}
        element = numbers(corrected, value, self.little)
        if tag in LUT_DESCRIPTORS and len(element["Value"]) > 1 and element["Value"][0] < 0:
            raise DropElement
        return element


def read_json_model(encoded: EncodedDataSet, wanted: frozenset[int]) -> LeanDataSet:
    """The attributes of the data set (up to its pixel data), plus the encoded top-level elements in ``wanted``."""
    walker = _Walker(encoded, wanted)
    attributes, text, _, _ = walker.data_set(encoded.start, len(encoded.data), DEFAULT_ENCODINGS, 0, True, False)
    return LeanDataSet(attributes, text, walker.top_level, walker.encodings)

