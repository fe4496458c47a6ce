"""The columns an index record takes from a data set's top-level elements, whichever reader gave their values.

A value is what pydicom's lenient reading gives for the element (``Dataset.get(keyword)``): text, a list of texts
for a multi-valued element, a pydicom value object, or None when the element is absent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from pydicom.datadict import tag_for_keyword
from pydicom.multival import MultiValue

from shared.uids import require_uid

# column: (keyword, longest text kept)
TEXT_COLUMNS = {
    "patient_id": ("PatientID", 64),
    "patient_name": ("PatientName", 10_000),
    "patient_birth_date": ("PatientBirthDate", 8),
    "patient_sex": ("PatientSex", 16),
    "study_date": ("StudyDate", 8),
    "study_time": ("StudyTime", 16),
    "accession_number": ("AccessionNumber", 64),
    "study_id": ("StudyID", 16),
    "study_description": ("StudyDescription", 10_000),
    "referring_physician_name": ("ReferringPhysicianName", 10_000),
    "modality": ("Modality", 16),
    "series_description": ("SeriesDescription", 10_000),
    "body_part_examined": ("BodyPartExamined", 64),
    "specific_character_set": ("SpecificCharacterSet", 200),
}
# column: (keyword, what an error names)
UID_COLUMNS = {
    "study_instance_uid": ("StudyInstanceUID", "Study Instance UID"),
    "series_instance_uid": ("SeriesInstanceUID", "Series Instance UID"),
    "sop_instance_uid": ("SOPInstanceUID", "SOP Instance UID"),
    "sop_class_uid": ("SOPClassUID", "SOP Class UID"),
}
INTEGER_COLUMNS = {"series_number": "SeriesNumber", "instance_number": "InstanceNumber"}
INTEGER_KEYWORDS = frozenset(INTEGER_COLUMNS.values())
TAG_OF_KEYWORD: dict[str, int] = {
    keyword: int(tag_for_keyword(keyword))  # type: ignore[arg-type]
    for keyword in [*(k for k, _ in TEXT_COLUMNS.values()), *(k for k, _ in UID_COLUMNS.values()),
                    *INTEGER_COLUMNS.values()]
}
RECORD_TAGS = frozenset(TAG_OF_KEYWORD.values())


class ReadObject(NamedTuple):
    """What the index record takes from a stored object's data set."""

    attributes: dict[str, Any]  # the DICOM JSON model of its non-bulk attributes
    attributes_json: str  # their text as json.dumps writes it: what the index stores
    columns: dict[str, Any]  # the record's columns, transfer_syntax included


def text_of(value: Any, limit: int) -> str:
    if isinstance(value, str):
        return value.strip()[:limit]
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        value = "\\".join(str(item) for item in value)
    return str(value).strip()[:limit]


def integer_of(value: Any) -> int | None:
    """A 32-bit signed integer, or None for anything else (empty, several values, not a number, out of range)."""
    try:
        number = int(float(str(value))) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is None or -(2**31) <= number < 2**31 else None


def record_columns(value_of: Callable[[str], Any]) -> dict[str, Any]:
    """The record's columns from the values of their keywords; InvalidUID when a UID is missing or invalid."""
    columns: dict[str, Any] = {column: text_of(value_of(keyword), limit)
                               for column, (keyword, limit) in TEXT_COLUMNS.items()}
    columns.update({column: require_uid(value_of(keyword), what) for column, (keyword, what) in UID_COLUMNS.items()})
    columns.update({column: integer_of(value_of(keyword)) for column, keyword in INTEGER_COLUMNS.items()})
    return columns
