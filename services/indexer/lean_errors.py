"""The two ways the lean reader (services/indexer/dicom_json.py) gives up, on an element or on a whole object."""

from __future__ import annotations


class LeftToPydicom(Exception):
    """Something the lean reader does not reproduce exactly: the object goes through pydicom's full reading."""


class DropElement(Exception):
    """pydicom's strict reading refuses this value, so ``to_json_dict(suppress_invalid_tags=True)`` leaves the
    element out of the attributes (a sequence whose items hold such a value is left out whole)."""
