"""Reading the stored DICOM JSON of an instance (PS3.18 F.2): an element by keyword, its values as text."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

PERSON_NAME_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def vr_of(keyword: str) -> str:
    """The dictionary VR of a keyword (UN for one pydicom does not know)."""
    tag = tag_for_keyword(keyword)
    return str(dictionary_VR(tag)) if tag is not None else "UN"


def json_element(attributes: dict[str, Any], keyword: str) -> dict[str, Any] | None:
    """The DICOM JSON element of ``keyword`` in a stored document (or an item of a sequence), if present."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    element: dict[str, Any] | None = attributes.get(f"{tag:08X}")
    return element


def json_texts(element: dict[str, Any] | None) -> list[str]:
    """Each value of an element as DICOM text (a person name as its ``=``-joined component groups)."""
    if not element:
        return []
    texts = []
    for value in element.get("Value") or []:
        if isinstance(value, dict):  # person name
            texts.append("=".join(value.get(group, "") for group in PERSON_NAME_GROUPS).rstrip("="))
        else:
            texts.append(str(value))
    return texts
