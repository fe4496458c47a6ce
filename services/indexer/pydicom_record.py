"""A stored object's attributes and record columns through pydicom's full reading: ``dcmread`` up to the pixel data,
``Dataset.to_json_dict`` for the attributes and ``Dataset.get`` for the columns.

This is the reference the lean reader (services/indexer/lean_record.py) equals, and the path for the objects it
leaves to pydicom. It raises whatever pydicom raises on a malformed object.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any, BinaryIO

import pydicom

from services.indexer.json_values import BULK_DATA_THRESHOLD
from services.indexer.record_fields import ReadObject, record_columns
from shared.uids import require_uid


def _leave_out_bulk(_element: Any) -> str:
    return ""


def attributes_of(dataset: pydicom.Dataset) -> dict[str, Any]:
    """The DICOM JSON of the data set's non-bulk attributes (values strict reading refuses are left out)."""
    return dataset.to_json_dict(bulk_data_threshold=BULK_DATA_THRESHOLD, bulk_data_element_handler=_leave_out_bulk,
                                suppress_invalid_tags=True)


def read_with_pydicom(part10: bytes | BinaryIO) -> ReadObject:
    """What the record takes from a Part-10 object."""
    dataset = pydicom.dcmread(BytesIO(part10) if isinstance(part10, bytes) else part10, stop_before_pixels=True)
    attributes = attributes_of(dataset)
    columns = record_columns(dataset.get)
    columns["transfer_syntax"] = require_uid(dataset.file_meta.get("TransferSyntaxUID"), "Transfer Syntax UID")
    return ReadObject(attributes, json.dumps(attributes), columns)
