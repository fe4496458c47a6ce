"""What pydicom's lenient reading (``Dataset.get(keyword)``) gives for an encoded top-level element, as text: the
values the index record's columns are made of (services/indexer/record_fields.py).

Lenient, unlike the strict reading of the attributes: a value too long for its VR is kept, and text that does not
decode in its character set is decoded with replacement characters.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.charset import decode_bytes
from pydicom.valuerep import TEXT_VR_DELIMS

from services.indexer.json_values import decode_text, name_components
from services.indexer.lean_errors import LeftToPydicom

Value = str | tuple[str, ...]
CACHED_VALUE_MAX_BYTES = 256
CACHE_ENTRIES = 10_000

_texts: dict[tuple[str, bytes, tuple[str, ...]], Value] = {}


def _decoded(value: bytes, encodings: Sequence[str]) -> str:
    try:
        return decode_text(value, encodings)
    except Exception:
        return decode_bytes(value, encodings, TEXT_VR_DELIMS)  # replaces what does not decode, and warns


def _one_or_many(items: list[str]) -> Value:
    return items[0] if len(items) == 1 else tuple(items)


def lenient_text(vr: str, value: bytes, encodings: tuple[str, ...]) -> Value:
    """A text-like element's value: one text, or a tuple for several. Values that repeat from object to object (a
    series' patient and study columns) are read once: a bounded cache keeps them."""
    if len(value) > CACHED_VALUE_MAX_BYTES:
        return _lenient_text(vr, value, encodings)
    key = (vr, value, encodings)
    text = _texts.get(key)
    if text is None:
        text = _lenient_text(vr, value, encodings)
        if len(_texts) >= CACHE_ENTRIES:
            _texts.clear()
        _texts[key] = text
    return text


def _lenient_text(vr: str, value: bytes, encodings: Sequence[str]) -> Value:
    if vr in ("SH", "LO", "UC"):
        return _one_or_many([item.rstrip("\x00 ") for item in _decoded(value, encodings).split("\\")])
    if vr in ("ST", "LT", "UT"):
        return _decoded(value, encodings).rstrip("\x00 ")
    if vr == "PN":
        names = _decoded(value.rstrip(b"\x00 "), encodings).split("\\")
        return _one_or_many(["=".join(name_components(name)) for name in names])
    if vr in ("AS", "CS", "DA", "DT", "TM"):
        return _one_or_many(value.decode("latin-1").rstrip(" \x00").split("\\"))
    if vr == "UI":
        items = value.decode("latin-1").rstrip("\x00 ").rstrip(" \x00").split("\\")
        return _one_or_many([item.strip() for item in items])
    if vr == "AE":
        return _one_or_many([item.strip() for item in value.decode("latin-1").split("\\")])
    if vr == "UR":
        return value.decode("latin-1").rstrip()
    raise LeftToPydicom("a record column encoded with a VR other than text")


def lenient_number_text(vr: str, value: bytes) -> Value | None:
    """An IS or DS element's value as the text its number object prints (None when empty)."""
    if vr not in ("IS", "DS"):
        raise LeftToPydicom("a record number encoded with a VR other than IS or DS")
    text = value.decode("latin-1")
    items = (text.strip() if vr == "DS" else text).rstrip(" \x00").split("\\")
    if len(items) > 1:
        return tuple(items)
    return items[0].strip() or None
