"""A stored object's attributes and record columns from its bytes alone (no pydicom Dataset): the indexer's usual
path. Raises LeftToPydicom for an object it does not read exactly as pydicom would
(services/indexer/pydicom_record.py reads those)."""

from __future__ import annotations

from typing import Any

from services.indexer.dicom_json import read_json_model
from services.indexer.lenient_values import lenient_number_text, lenient_text
from services.indexer.part10_header import locate_data_set
from services.indexer.record_fields import (
    INTEGER_KEYWORDS,
    RECORD_TAGS,
    TAG_OF_KEYWORD,
    ReadObject,
    record_columns,
)
from shared.uids import require_uid


def read_lean(data: bytes, complete: bool = True) -> ReadObject:
    """What the record takes from a Part-10 object, or from its first bytes (``complete`` False) when they hold
    everything before the pixel data."""
    encoded = locate_data_set(data, complete)
    lean = read_json_model(encoded, RECORD_TAGS)

    def value_of(keyword: str) -> Any:
        found = lean.top_level.get(TAG_OF_KEYWORD[keyword])
        if found is None:
            return None
        vr, value = found
        if keyword in INTEGER_KEYWORDS:
            return lenient_number_text(vr, value)
        return lenient_text(vr, value, lean.encodings)

    columns = record_columns(value_of)
    columns["transfer_syntax"] = require_uid(encoded.transfer_syntax, "Transfer Syntax UID")
    return ReadObject(lean.attributes, lean.attributes_json, columns)
