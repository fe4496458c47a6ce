"""DICOM JSON (PS3.18 F.2) for DICOMweb answers: attribute names in query strings, values from the index.

Values answered from indexed columns are converted here; values answered from an instance's stored attributes
are already DICOM JSON elements and are passed on as they are.
"""

from __future__ import annotations

import re
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

_TAG = re.compile(r"[0-9A-Fa-f]{8}")
NUMBER_VRS = {"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"}
INTEGER_VRS = {"IS", "US", "UL", "SS", "SL", "SV", "UV"}


class UnknownAttribute(ValueError):
    """A query parameter or includefield that names no attribute of the dictionary."""


def keyword_of(name: str) -> str:
    """The dictionary keyword of ``name``, given as a keyword (PatientID) or a tag (00100020)."""
    name = name.strip()
    if _TAG.fullmatch(name):
        keyword = keyword_for_tag(int(name, 16))
        if keyword:
            return str(keyword)
    elif tag_for_keyword(name) is not None:
        return name
    raise UnknownAttribute(f"{name!r} is not a DICOM attribute keyword or tag")


def tag_of(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return f"{tag:08X}"


def vr_of(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return "UN"
    vr = str(dictionary_VR(tag))
    return "US" if vr == "US or SS" else "OW" if vr == "OB or OW" else vr


def _person_name(text: str) -> dict[str, str]:
    groups = text.split("=")
    named = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups))
    return {group: value for group, value in named.items() if value}


def _number(text: Any, vr: str) -> int | float | None:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return text
    try:
        number = float(str(text).strip())
    except ValueError:
        return None
    return int(number) if vr in INTEGER_VRS and number.is_integer() else number


def element(keyword: str, value: Any) -> dict[str, Any]:
    """A DICOM JSON element of ``keyword`` holding ``value`` (text, number, list, or None for empty)."""
    vr = vr_of(keyword)
    items = value if isinstance(value, (list, tuple)) else [] if value is None or value == "" else [value]
    if vr == "PN":
        values: list[Any] = [_person_name(str(item)) for item in items if str(item)]
    elif vr in NUMBER_VRS:
        values = [number for number in (_number(item, vr) for item in items) if number is not None]
    elif vr == "SQ":
        values = []
    else:
        values = [str(item) for item in items if str(item) != ""]
    answer: dict[str, Any] = {"vr": vr}
    if values:
        answer["Value"] = values
    return answer


def without_bulk(attributes: dict[str, Any]) -> dict[str, Any]:
    """Stored attributes minus the bulk data the indexer left out (empty BulkDataURI), sequences included."""
    kept: dict[str, Any] = {}
    for tag, item in attributes.items():
        if not isinstance(item, dict):
            continue
        if "BulkDataURI" in item and not item["BulkDataURI"]:
            continue
        if item.get("vr") == "SQ" and isinstance(item.get("Value"), list):
            item = dict(item, Value=[without_bulk(entry) if isinstance(entry, dict) else entry
                                     for entry in item["Value"]])
        kept[tag] = item
    return kept
