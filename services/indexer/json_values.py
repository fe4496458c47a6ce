"""The DICOM JSON model (PS3.18 F.2) of one encoded value, exactly as pydicom gives it.

The reference is ``Dataset.to_json_dict(bulk_data_threshold=1024, suppress_invalid_tags=True)`` with a bulk data
handler that answers "" on a dataset read by ``dcmread``: values are read strictly (a value pydicom's strict reading
refuses raises DropElement), text is decoded with the Specific Character Set by pydicom's own rules, numbers become
JSON numbers, binary values up to 768 bytes are inline (base64) and larger ones are left out (an empty BulkDataURI).
Each element also gets its text exactly as ``json.dumps`` writes it, so that the index stores a data set's text
without serializing it again. Sequences are the walker's (services/indexer/dicom_json.py); everything else of one
element is here.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring_ascii
from math import inf
from typing import Any

from pydicom.charset import decode_bytes
from pydicom.config import strict_reading
from pydicom.tag import _LUT_DESCRIPTOR_TAGS
from pydicom.valuerep import STR_VR_REGEXES, TEXT_VR_DELIMS

from services.indexer.lean_errors import DropElement, LeftToPydicom

BULK_DATA_THRESHOLD = 1024  # of the base64 text: binary values larger than this are left out of the attributes
INLINE_BYTES_LIMIT = (BULK_DATA_THRESHOLD // 4) * 3  # pydicom compares the binary length with 3/4 of the threshold
ESCAPE = 0x1B
LUT_DESCRIPTORS = frozenset(_LUT_DESCRIPTOR_TAGS)  # first value read as US even when encoded SS
IS_PATTERN = STR_VR_REGEXES["IS"]
DS_PATTERN = STR_VR_REGEXES["DS"]
UID_PATTERN = STR_VR_REGEXES["UI"]
UID_MAX_LENGTH = 64
MAX_TEXT_LENGTH = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10240}  # checked by strict reading (UC, UT: none)
IS_MAX_LENGTH = 12
DS_MAX_LENGTH = 16
PN_MAX_COMPONENTS = 3
PN_MAX_COMPONENT_LENGTH = 64
NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q", "FL": "f", "FD": "d"}
NUMBER_SIZES = {vr: struct.calcsize("<" + code) for vr, code in NUMBER_FORMATS.items()}  # standard sizes
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

UNCACHED_VRS = BINARY_VRS  # values seldom repeated
CACHED_VALUE_MAX_BYTES = 256
CACHE_ENTRIES = 20_000
REFUSED = object()  # cached for a value strict reading refuses

JsonElement = dict[str, Any]
_converted: dict[tuple[str, bytes, tuple[str, ...], bool], Any] = {}  # (JSON values or None, text), or REFUSED


def decode_text(value: bytes, encodings: Sequence[str]) -> str:
    """Text of a value in the data set's character sets, as strict reading decodes it (UnicodeError if it cannot)."""
    if ESCAPE not in value:
        return value.decode(encodings[0])
    with strict_reading():  # ISO 2022 code extensions: pydicom's own decoder, which raises as strict reading does
        return decode_bytes(value, encodings, TEXT_VR_DELIMS)


def _decoded(value: bytes, encodings: Sequence[str]) -> str:
    try:
        return decode_text(value, encodings)
    except Exception as exc:  # UnicodeError, LookupError, or whatever pydicom's ISO 2022 decoder raises
        raise DropElement from exc


def _strings(vr: str, items: list[str]) -> JsonElement:
    """A single value is left out when empty (VM 0); every value of a multi-valued element is kept."""
    if len(items) == 1:
        return {"vr": vr, "Value": items} if items[0] else {"vr": vr}
    return {"vr": vr, "Value": items}


def _ascii_strings(vr: str, value: bytes, _encodings: Sequence[str], _little: bool, _tag: int) -> JsonElement:
    """AS, CS, DA, DT, TM: Latin-1, trailing spaces and NULs removed, split at backslashes."""
    items = value.decode("latin-1").rstrip(" \x00").split("\\")
    return {"vr": vr, "Value": items} if len(items) > 1 or items[0] else {"vr": vr}


def _uids(vr: str, value: bytes, _encodings: Sequence[str], _little: bool, _tag: int) -> JsonElement:
    items = value.decode("latin-1").rstrip("\x00 ").rstrip(" \x00").split("\\")
    for item in items:
        if item and (len(item) > UID_MAX_LENGTH or not UID_PATTERN.match(item) or item[-1] == "\n"):
            raise DropElement
    return {"vr": vr, "Value": items} if len(items) > 1 or items[0] else {"vr": vr}


def _application_entities(vr: str, value: bytes, _encodings: Sequence[str], _little: bool, _tag: int) -> JsonElement:
    return _strings(vr, [item.strip() for item in value.decode("latin-1").split("\\")])


def _uri(vr: str, value: bytes, _encodings: Sequence[str], _little: bool, _tag: int) -> JsonElement:
    return _strings(vr, [value.decode("latin-1").rstrip()])


def _texts(vr: str, value: bytes, encodings: Sequence[str], _little: bool, _tag: int) -> JsonElement:
    """SH, LO, UC: decoded, split at backslashes, each value checked for its length, then its trailing spaces and
    NULs removed."""
    items = _decoded(value, encodings).split("\\")
    limit = MAX_TEXT_LENGTH.get(vr)
    if len(items) == 1:
        text = items[0]
        if limit is not None and len(text) > limit:
            raise DropElement
        text = text.rstrip("\x00 ")
        return {"vr": vr, "Value": [text]} if text else {"vr": vr}
    if limit is not None and any(len(item) > limit for item in items):
        raise DropElement
    return {"vr": vr, "Value": [item.rstrip("\x00 ") for item in items]}


def _single_text(vr: str, value: bytes, encodings: Sequence[str], _little: bool, _tag: int) -> JsonElement:
    """ST, LT, UT: one value, backslashes included."""
    text = _decoded(value, encodings)
    limit = MAX_TEXT_LENGTH.get(vr)
    if limit is not None and len(text) > limit:
        raise DropElement
    return _strings(vr, [text.rstrip("\x00 ")])


def name_components(name: str) -> list[str]:
    """The alphabetic, ideographic and phonetic groups of one person name, trailing empty groups removed."""
    components = name.split("=")
    while components and not components[-1]:
        components.pop()
    return components


def _person_name(components: list[str]) -> dict[str, str]:
    name = {"Alphabetic": components[0]}
    if len(components) > 1:
        name["Ideographic"] = components[1]
    if len(components) > 2:
        name["Phonetic"] = components[2]
    return name


def _person_names(vr: str, value: bytes, encodings: Sequence[str], _little: bool, _tag: int) -> JsonElement:
    names = _decoded(value.rstrip(b"\x00 "), encodings).split("\\")
    for name in names:
        groups = name.split("=")
        if len(groups) > PN_MAX_COMPONENTS or any(len(group) > PN_MAX_COMPONENT_LENGTH for group in groups):
            raise DropElement
    if len(names) == 1:
        components = name_components(names[0])
        return {"vr": vr, "Value": [_person_name(components)]} if components else {"vr": vr}
    values = []
    for name in names:
        components = name_components(name)
        if not components:  # pydicom fails on an empty name among several
            raise DropElement
        values.append(_person_name(components))
    return {"vr": vr, "Value": values}


def _integer_strings(vr: str, value: bytes, _encodings: Sequence[str], _little: bool, _tag: int) -> JsonElement:
    """Each value checked as strict reading checks it (with its spaces: at most 12 characters, digits and a sign),
    then a 32-bit integer; an empty value among several is refused."""
    items = value.decode("latin-1").rstrip(" \x00").split("\\")
    if len(items) == 1 and not items[0].strip():
        return {"vr": vr}
    numbers = []
    for item in items:
        if len(item) > IS_MAX_LENGTH or not IS_PATTERN.match(item) or item[-1] == "\n":
            raise DropElement
        number = int(item)
        if not -(2**31) <= number < 2**31:
            raise DropElement
        numbers.append(number)
    return {"vr": vr, "Value": numbers}


def _decimal_strings(vr: str, value: bytes, _encodings: Sequence[str], _little: bool, _tag: int) -> JsonElement:
    """Each value (spaces around it removed) checked as strict reading checks it: at most 16 characters of a
    decimal number; an empty value among several is refused."""
    items = value.decode("latin-1").strip().rstrip(" \x00").split("\\")
    if len(items) == 1 and not items[0].strip():
        return {"vr": vr}
    numbers = []
    for item in items:
        stripped = item.strip()
        if not stripped or len(stripped) > DS_MAX_LENGTH or not DS_PATTERN.match(stripped):
            raise DropElement
        numbers.append(float(stripped))
    return {"vr": vr, "Value": numbers}


def numbers(vr: str, value: bytes, little: bool, signed_lut_fix: bool = False) -> JsonElement:
    """US, SS, UL, SL, UV, SV, FL, FD; a length that is no multiple of the value size is refused."""
    size = NUMBER_SIZES[vr]
    if len(value) % size:
        raise DropElement
    unpacked = list(struct.unpack(f"{'<' if little else '>'}{len(value) // size}{NUMBER_FORMATS[vr]}", value))
    if signed_lut_fix and len(unpacked) > 1 and unpacked[0] < 0:
        unpacked[0] += 65536
    return {"vr": vr, "Value": unpacked}


def _numbers(vr: str, value: bytes, _encodings: Sequence[str], little: bool, tag: int) -> JsonElement:
    return numbers(vr, value, little, tag in LUT_DESCRIPTORS)


def _tags(vr: str, value: bytes, _encodings: Sequence[str], little: bool, _tag: int) -> JsonElement:
    count = len(value) // 4
    if len(value) != 4 and count == 1:  # pydicom keeps a one-item list here and cannot format it
        raise DropElement
    if count == 0:
        return {"vr": vr}
    pairs = struct.unpack(f"{'<' if little else '>'}{2 * count}H", value[:4 * count])
    return {"vr": vr, "Value": [f"{pairs[i] << 16 | pairs[i + 1]:08X}" for i in range(0, len(pairs), 2)]}


def _binary(vr: str, value: bytes, _encodings: Sequence[str], _little: bool, _tag: int) -> JsonElement:
    if len(value) > INLINE_BYTES_LIMIT:
        return {"vr": vr, "BulkDataURI": ""}
    return {"vr": vr, "InlineBinary": base64.b64encode(value).decode()}


Converter = Callable[[str, bytes, Sequence[str], bool, int], JsonElement]
CONVERTERS: dict[str, Converter] = {
    "AE": _application_entities,
    "AS": _ascii_strings, "CS": _ascii_strings, "DA": _ascii_strings, "DT": _ascii_strings, "TM": _ascii_strings,
    "UI": _uids,
    "UR": _uri,
    "SH": _texts, "LO": _texts, "UC": _texts,
    "ST": _single_text, "LT": _single_text, "UT": _single_text,
    "PN": _person_names,
    "IS": _integer_strings,
    "DS": _decimal_strings,
    "AT": _tags,
    **{vr: _numbers for vr in NUMBER_FORMATS},
    **{vr: _binary for vr in BINARY_VRS},
}


def _scalar_text(value: Any) -> str:
    """A JSON value as ``json.dumps`` writes it (ASCII only; NaN and infinities as Python's json writes them)."""
    if type(value) is str:
        return encode_basestring_ascii(value)
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float:
        if value != value:
            return "NaN"
        if value in (inf, -inf):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if type(value) is dict:  # a person name's groups
        return "{" + ", ".join([f"{encode_basestring_ascii(key)}: {_scalar_text(part)}"
                                for key, part in value.items()]) + "}"
    return json.dumps(value)


def element_text(element: JsonElement) -> str:
    """The text ``json.dumps`` gives for a non-sequence element (so that a data set's text is its elements' joined)."""
    if len(element) == 1:
        return f'{{"vr": "{element["vr"]}"}}'
    values = element.get("Value")
    if values is None:
        return json.dumps(element)
    return f'{{"vr": "{element["vr"]}", "Value": [{", ".join([_scalar_text(value) for value in values])}]}}'


def convert(vr: str, value: bytes, encodings: tuple[str, ...], little: bool, tag: int,
            cacheable: bool) -> tuple[JsonElement, str]:
    """A non-sequence element with a defined length: its JSON (a new dict every time) and that JSON's text.

    Values that repeat from object to object (most of a series' attributes) are converted once: a bounded cache
    keeps their JSON values and text (a person name's groups are copied, never shared). Binary values, long values
    and those whose conversion depends on the tag (``cacheable`` False) are converted each time.
    """
    if not value:
        return {"vr": vr}, f'{{"vr": "{vr}"}}'
    if cacheable and len(value) <= CACHED_VALUE_MAX_BYTES and vr not in UNCACHED_VRS:
        key = (vr, value, encodings, little)
        cached = _converted.get(key)
        if cached is None:
            cached = _converted_for_cache(vr, value, encodings, little, tag)
            if len(_converted) >= CACHE_ENTRIES:
                _converted.clear()  # a flood of values seen once: start again
            _converted[key] = cached
        if cached is REFUSED:
            raise DropElement
        values, text = cached
        if values is None:
            return {"vr": vr}, text
        return {"vr": vr, "Value": [dict(name) for name in values] if vr == "PN" else list(values)}, text
    element = _converter(vr)(vr, value, encodings, little, tag)
    return element, element_text(element)


def _converter(vr: str) -> Converter:
    converter = CONVERTERS.get(vr)
    if converter is None:
        raise LeftToPydicom("a VR without a converter")
    return converter


def _converted_for_cache(vr: str, value: bytes, encodings: tuple[str, ...], little: bool, tag: int) -> Any:
    try:
        element = _converter(vr)(vr, value, encodings, little, tag)
    except DropElement:
        return REFUSED
    values = element.get("Value")
    return tuple(values) if values is not None else None, element_text(element)
