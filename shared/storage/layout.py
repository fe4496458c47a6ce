"""Where an instance lives in the object store: keys built only from validated UIDs."""

from __future__ import annotations

from shared.storage.base import validate_key
from shared.uids import require_uid


def instance_key(study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str) -> str:
    study = require_uid(study_instance_uid, "Study Instance UID")
    series = require_uid(series_instance_uid, "Series Instance UID")
    sop = require_uid(sop_instance_uid, "SOP Instance UID")
    return validate_key(f"{study}/{series}/{sop}.dcm")
