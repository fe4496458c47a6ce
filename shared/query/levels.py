"""What each query level holds: its table, its unique key, and the keys answered from indexed columns.

A key that is not listed here is answered (and matched) from the stored DICOM JSON of a representative
instance of the entity. PatientName matches on a case-folded column (case-insensitive by default), or on a
case-folded column without accents when the live configuration asks for accent-insensitive names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.db.models import Instance, Patient, Series, Study


@dataclass(frozen=True)
class Key:
    keyword: str
    vr: str
    column: Any  # the column that holds the value
    match_column: Any = None  # the column matched against, when not the value column (folded names)
    fold: bool = False  # match on the case-folded value
    accent_free_column: Any = None  # the column matched when accents are ignored too (folded names)

    @property
    def matched(self) -> Any:
        return self.match_column if self.match_column is not None else self.column


PATIENT_KEYS = (
    Key("PatientID", "LO", Patient.patient_id),
    Key("PatientName", "PN", Patient.patient_name, Patient.patient_name_folded, fold=True,
        accent_free_column=Patient.patient_name_search),
    Key("PatientBirthDate", "DA", Patient.patient_birth_date),
    Key("PatientSex", "CS", Patient.patient_sex),
)
STUDY_KEYS = (
    Key("StudyInstanceUID", "UI", Study.study_instance_uid),
    Key("StudyDate", "DA", Study.study_date),
    Key("StudyTime", "TM", Study.study_time),
    Key("AccessionNumber", "SH", Study.accession_number),
    Key("StudyID", "SH", Study.study_id),
    Key("StudyDescription", "LO", Study.study_description),
    Key("ReferringPhysicianName", "PN", Study.referring_physician_name),
)
SERIES_KEYS = (
    Key("SeriesInstanceUID", "UI", Series.series_instance_uid),
    Key("Modality", "CS", Series.modality),
    Key("SeriesNumber", "IS", Series.series_number),
    Key("SeriesDescription", "LO", Series.series_description),
    Key("BodyPartExamined", "CS", Series.body_part_examined),
)
IMAGE_KEYS = (
    Key("SOPInstanceUID", "UI", Instance.sop_instance_uid),
    Key("SOPClassUID", "UI", Instance.sop_class_uid),
    Key("InstanceNumber", "IS", Instance.instance_number),
)


@dataclass(frozen=True)
class Level:
    name: str
    table: Any
    unique_key: str
    own_keys: tuple[Key, ...]
    computed_keys: frozenset[str]


LEVELS = {
    "PATIENT": Level("PATIENT", Patient, "PatientID", PATIENT_KEYS, frozenset({
        "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"})),
    "STUDY": Level("STUDY", Study, "StudyInstanceUID", STUDY_KEYS, frozenset({
        "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "ModalitiesInStudy",
        "SOPClassesInStudy"})),
    "SERIES": Level("SERIES", Series, "SeriesInstanceUID", SERIES_KEYS, frozenset({
        "NumberOfSeriesRelatedInstances"})),
    "IMAGE": Level("IMAGE", Instance, "SOPInstanceUID", IMAGE_KEYS, frozenset()),
}
ORDER = ("PATIENT", "STUDY", "SERIES", "IMAGE")


def keys_up_to(level: str) -> dict[str, Key]:
    """Every indexed key of this level and the levels above it (relational matching on higher keys)."""
    keys: dict[str, Key] = {}
    for name in ORDER[: ORDER.index(level) + 1]:
        keys.update({key.keyword: key for key in LEVELS[name].own_keys})
    return keys
