"""Where an instance lives in the object store: keys built only from validated UIDs and sanitised components.

``storage_layout`` (live configuration) chooses the folders, ``storage_naming`` the file name:

- ``flat``: ``<name>``; ``patient``: ``<patient>/<name>``; ``study``: ``<StudyUID>/<name>``;
  ``series`` (default): ``<patient>/<StudyUID>/<SeriesUID>/<name>``; ``date``: ``YYYY/MM/DD/<name>`` (UTC day the
  instance was received).
- names: ``sop_uid`` (default) ``<SOPUID>.dcm``; ``instance_number`` ``<InstanceNumber, 6 digits>_<SOPUID>.dcm``;
  ``timestamp`` ``<received, YYYYMMDDTHHMMSSffffffZ>_<SOPUID>.dcm``; ``sequence`` ``<arrival counter of the
  process, 10 digits>_<SOPUID>.dcm``.

Every file name ends with the instance's own SOP Instance UID, and each SOP Instance UID is bound to exactly one key
by its claim (shared.storage.claims): two instances never share a key, whatever the layout. The patient folder is
``p-<first 20 hex digits of the SHA-256 of the PatientID>`` (``_none`` for an empty one), never the PatientID itself:
object keys travel in queue messages, log lines and S3 access logs, which must hold no patient data (the way dcm4chee
hashes attributes into its storage paths). Distinct PatientIDs share a folder only if 80-bit hashes collide, and
even then two instances never share a key.

``legacy_instance_key`` is the scheme used before layouts existed (``StudyUID/SeriesUID/SOPInstanceUID.dcm``):
objects stored under it stay where they are (the index and their claim name their key).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal, get_args

from shared.storage.base import validate_key
from shared.uids import require_uid

StorageLayout = Literal["flat", "patient", "study", "series", "date"]
StorageNaming = Literal["sop_uid", "instance_number", "timestamp", "sequence"]
LAYOUTS: tuple[str, ...] = get_args(StorageLayout)
NAMINGS: tuple[str, ...] = get_args(StorageNaming)

PATIENT_DIGEST_HEX = 20
NO_PATIENT_ID = "_none"
_sequence = itertools.count(1)


@dataclass(frozen=True)
class KeyFacts:
    """What a key may be built from: the validated UIDs plus values from the wire that are sanitised here."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    patient_id: str | None = field(repr=False)  # from the wire: reaches a path only through patient_component
    instance_number: int | None
    received_at: datetime


def legacy_instance_key(study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str) -> str:
    study = require_uid(study_instance_uid, "Study Instance UID")
    series = require_uid(series_instance_uid, "Series Instance UID")
    sop = require_uid(sop_instance_uid, "SOP Instance UID")
    return validate_key(f"{study}/{series}/{sop}.dcm")


instance_key = legacy_instance_key  # the name older code and tests use


def patient_component(patient_id: str | None) -> str:
    """The folder of a PatientID: a pseudonym (a prefix of its SHA-256), so that keys carry no patient data."""
    value = (patient_id or "").strip()
    if not value:
        return NO_PATIENT_ID
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:PATIENT_DIGEST_HEX]
    return f"p-{digest}"


def file_name(naming: str, facts: KeyFacts) -> str:
    sop = require_uid(facts.sop_instance_uid, "SOP Instance UID")
    if naming == "sop_uid":
        return f"{sop}.dcm"
    if naming == "instance_number":
        number = facts.instance_number if facts.instance_number is not None and facts.instance_number >= 0 else 0
        return f"{min(number, 999_999_999):06d}_{sop}.dcm"
    if naming == "timestamp":
        moment = facts.received_at.astimezone(timezone.utc)
        return f"{moment.strftime('%Y%m%dT%H%M%S%f')}Z_{sop}.dcm"
    if naming == "sequence":
        return f"{next(_sequence):010d}_{sop}.dcm"
    raise ValueError(f"unknown storage naming {naming!r}")


def layout_key(layout: str, naming: str, facts: KeyFacts) -> str:
    """The key a new instance gets under this layout and naming (validated; never outside the scheme)."""
    name = file_name(naming, facts)
    study = require_uid(facts.study_instance_uid, "Study Instance UID")
    series = require_uid(facts.series_instance_uid, "Series Instance UID")
    if layout == "flat":
        folders: list[str] = []
    elif layout == "patient":
        folders = [patient_component(facts.patient_id)]
    elif layout == "study":
        folders = [study]
    elif layout == "series":
        folders = [patient_component(facts.patient_id), study, series]
    elif layout == "date":
        day = facts.received_at.astimezone(timezone.utc)
        folders = [f"{day.year:04d}", f"{day.month:02d}", f"{day.day:02d}"]
    else:
        raise ValueError(f"unknown storage layout {layout!r}")
    return validate_key("/".join([*folders, name]))
