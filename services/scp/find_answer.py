"""C-FIND answers encoded from the index rows directly, not through a pydicom Dataset and its writer.

A study-level answer of 15 keys cost ~0.45 ms to build as a Dataset and encode with pydicom; a query with 20
answers spent more time there than in its SQL. Here each answer is a list of (tag, VR, value) encoded by hand in
Implicit or Explicit VR Little Endian: text values (the index's columns, and stored text attributes) and the
binary integers. Anything else (sequences, numbers stored as JSON numbers, binary values) is encoded element by
element by pydicom, and a context in Big Endian or Deflated syntax gets the whole answer from pydicom.

pynetdicom's C-FIND service encodes what the handler yields with ``pynetdicom.service_class.encode``; that name
is pointed at ``encode_answer``, which encodes a ``FindAnswer`` and passes every other data set to pynetdicom.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import pynetdicom.service_class
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pynetdicom.dsutils import encode as pynetdicom_encode

from shared.query.dicomjson import json_texts

UTF8 = "ISO_IR 192"
SPECIFIC_CHARACTER_SET = 0x00080005
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
INTEGER_FORMATS = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i"}
LONG_LENGTH_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})


@dataclass(frozen=True)
class Text:
    values: tuple[str, ...]


@dataclass(frozen=True)
class Integer:
    value: int


Value = Text | Integer | DataElement | None  # None: present and empty (a key the entity has no value for)


def text_of(value: Any) -> Text:
    return Text(tuple(str(item) for item in value) if isinstance(value, list) else (str(value),))


def stored_value(vr: str, stored: dict[str, Any]) -> Text | None:
    """A stored DICOM JSON element as text, when it is text (else None: pydicom encodes it)."""
    if vr not in TEXT_VRS or "InlineBinary" in stored or "BulkDataURI" in stored:
        return None
    if not all(isinstance(value, (str, dict)) for value in stored.get("Value") or []):
        return None
    return Text(tuple(json_texts(stored)))


def _is_ascii_element(element: DataElement) -> bool:
    if element.VR == "SQ":
        return all(_is_ascii_element(inner) for item in element.value or [] for inner in item)
    return str(element.value).isascii()


class FindAnswer:
    """One pending C-FIND identifier: (tag, VR, value) per returned key."""

    def __init__(self, elements: list[tuple[int, str, Value]]) -> None:
        self._elements = sorted(elements, key=lambda element: element[0])
        self.is_ascii = all(
            _is_ascii_element(value) if isinstance(value, DataElement)
            else not isinstance(value, Text) or all(text.isascii() for text in value.values)
            for _, _, value in self._elements)
        if not self.is_ascii:
            self._elements.insert(0, (SPECIFIC_CHARACTER_SET, "CS", Text((UTF8,))))

    def as_dataset(self) -> Dataset:
        dataset = Dataset()
        for tag, vr, value in self._elements:
            if isinstance(value, DataElement):
                dataset.add(value)
            elif isinstance(value, Text):
                dataset.add(DataElement(tag, vr, list(value.values) if len(value.values) > 1 else value.values[0]))
            elif isinstance(value, Integer):
                dataset.add(DataElement(tag, vr, value.value))
            else:
                dataset.add(DataElement(tag, vr, [] if vr == "SQ" else None))
        return dataset

    def encode(self, implicit_vr: bool) -> bytes:
        """Little Endian, Implicit or Explicit VR."""
        encoding = "utf_8" if not self.is_ascii else "ascii"
        parts: list[bytes] = []
        for tag, vr, value in self._elements:
            if isinstance(value, DataElement):
                parts.append(_by_pydicom(value, implicit_vr, encoding))
                continue
            if value is None:
                raw = b""
            elif isinstance(value, Integer):
                raw = struct.pack(INTEGER_FORMATS[vr], value.value)
            else:
                raw = "\\".join(value.values).encode(encoding)
                if len(raw) % 2:
                    raw += b"\x00" if vr == "UI" else b" "
            parts.append(_header(tag, vr, len(raw), implicit_vr) + raw)
        return b"".join(parts)


def _header(tag: int, vr: str, length: int, implicit_vr: bool) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if implicit_vr:
        return struct.pack("<HHI", group, element, length)
    if vr in LONG_LENGTH_VRS:
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, length)
    if length > 0xFFFF:
        raise ValueError(f"a {vr} value of {length} bytes")
    return struct.pack("<HH2sH", group, element, vr.encode(), length)


def _by_pydicom(element: DataElement, implicit_vr: bool, encoding: str) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit_vr
    write_data_element(buffer, element, [encoding if encoding == "utf_8" else "iso8859"])
    return buffer.getvalue()


def encode_answer(dataset: Any, implicit_vr: bool, little_endian: bool, deflated: bool = False) -> bytes | None:
    """``pynetdicom.service_class.encode``: our answers by hand where the syntax allows, the rest by pynetdicom."""
    if isinstance(dataset, FindAnswer):
        if little_endian and not deflated:
            try:
                return dataset.encode(implicit_vr)
            except (ValueError, struct.error, UnicodeError):
                pass
        dataset = dataset.as_dataset()
    return pynetdicom_encode(dataset, implicit_vr, little_endian, deflated)


def install() -> None:
    """Point pynetdicom's C-FIND service at encode_answer (idempotent)."""
    pynetdicom.service_class.encode = encode_answer  # type: ignore[attr-defined]
