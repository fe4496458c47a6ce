"""Turn a stored Part-10 object into the values the index keeps (text decoded to Unicode)."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset

from shared.dicom.names import accent_free, folded
from shared.digest import read_chunks, size_and_sha256
from shared.uids import require_uid

BULK_DATA_THRESHOLD = 1024  # binary values larger than this are left out of the stored attributes
NO_PATIENT_ID_PREFIX = "~no-id~"  # longer than any legal PatientID once a UID follows: never collides


class UnindexableObject(ValueError):
    """The object cannot be parsed or lacks what the index needs; it goes to the dead-letter list."""


@dataclass(frozen=True)
class IndexRecord:
    patient_key: str
    patient_id: str
    patient_name: str
    patient_name_folded: str
    patient_name_search: str
    patient_birth_date: str
    patient_sex: str
    study_instance_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    series_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    body_part_examined: str
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax: str
    specific_character_set: str
    size: int
    sha256: str
    attributes: dict[str, Any]


def _text(dataset: Dataset, keyword: str, limit: int) -> str:
    value = dataset.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = "\\".join(str(item) for item in value)
    return str(value).strip()[:limit]


def _integer(dataset: Dataset, keyword: str) -> int | None:
    value = dataset.get(keyword)
    try:
        number = int(float(str(value))) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return number if number is None or -(2**31) <= number < 2**31 else None


def _leave_out_bulk(_element: Any) -> str:
    return ""


def _size_and_sha256(part10: bytes | BinaryIO) -> tuple[int, str]:
    if isinstance(part10, bytes):
        return size_and_sha256([part10])
    part10.seek(0)
    measured = size_and_sha256(read_chunks(part10))
    part10.seek(0)
    return measured


def extract(part10: bytes | BinaryIO) -> IndexRecord:
    """The index record of a stored object: its bytes, or a seekable file (hashed a chunk at a time, parsed up to
    the pixel data, so a large object is never held whole)."""
    size, sha256 = _size_and_sha256(part10)
    try:
        dataset = pydicom.dcmread(BytesIO(part10) if isinstance(part10, bytes) else part10, stop_before_pixels=True)
        attributes = dataset.to_json_dict(
            bulk_data_threshold=BULK_DATA_THRESHOLD,
            bulk_data_element_handler=_leave_out_bulk,
            suppress_invalid_tags=True,
        )
        patient_name = _text(dataset, "PatientName", 10_000)
        record_fields = dict(
            patient_id=_text(dataset, "PatientID", 64),
            patient_name=patient_name,
            patient_name_folded=folded(patient_name),
            patient_name_search=accent_free(patient_name),
            patient_birth_date=_text(dataset, "PatientBirthDate", 8),
            patient_sex=_text(dataset, "PatientSex", 16),
            study_instance_uid=require_uid(dataset.get("StudyInstanceUID"), "Study Instance UID"),
            study_date=_text(dataset, "StudyDate", 8),
            study_time=_text(dataset, "StudyTime", 16),
            accession_number=_text(dataset, "AccessionNumber", 64),
            study_id=_text(dataset, "StudyID", 16),
            study_description=_text(dataset, "StudyDescription", 10_000),
            referring_physician_name=_text(dataset, "ReferringPhysicianName", 10_000),
            series_instance_uid=require_uid(dataset.get("SeriesInstanceUID"), "Series Instance UID"),
            modality=_text(dataset, "Modality", 16),
            series_number=_integer(dataset, "SeriesNumber"),
            series_description=_text(dataset, "SeriesDescription", 10_000),
            body_part_examined=_text(dataset, "BodyPartExamined", 64),
            sop_instance_uid=require_uid(dataset.get("SOPInstanceUID"), "SOP Instance UID"),
            sop_class_uid=require_uid(dataset.get("SOPClassUID"), "SOP Class UID"),
            instance_number=_integer(dataset, "InstanceNumber"),
            transfer_syntax=require_uid(dataset.file_meta.get("TransferSyntaxUID"), "Transfer Syntax UID"),
            specific_character_set=_text(dataset, "SpecificCharacterSet", 200),
        )
    except UnindexableObject:
        raise
    except (Exception, RecursionError) as exc:  # pydicom raises many kinds on malformed input
        raise UnindexableObject(f"cannot parse the stored object ({exc.__class__.__name__})") from exc
    patient_key = record_fields["patient_id"] or NO_PATIENT_ID_PREFIX + str(record_fields["study_instance_uid"])
    return IndexRecord(
        patient_key=patient_key,
        size=size,
        sha256=sha256,
        attributes=attributes,
        **record_fields,  # type: ignore[arg-type]
    )
