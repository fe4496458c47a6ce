"""Validation of DICOM UIDs that come from the wire (PS3.5 9.1): digits and dots, at most 64 characters."""

from __future__ import annotations

import re

UID_MAX_LENGTH = 64
_UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
# Many modalities write components with leading zeros; accepted, as dcm4chee and Orthanc do. Only the
# character set and length matter for safety (keys and paths are built from them).
_LENIENT_UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")


class InvalidUID(ValueError):
    """A value that must be a UID is not one."""


def is_valid_uid(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= UID_MAX_LENGTH
        and _LENIENT_UID_PATTERN.fullmatch(value) is not None
    )


def is_strict_uid(value: object) -> bool:
    """True for a UID that also follows the no-leading-zero rule of PS3.5 9.1."""
    return is_valid_uid(value) and _UID_PATTERN.fullmatch(str(value)) is not None


def require_uid(value: object, what: str) -> str:
    """Return ``value`` as a UID string, or raise InvalidUID naming ``what`` (never echoing the value)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        value = value.rstrip("\x00 ")
    if not is_valid_uid(value):
        raise InvalidUID(f"{what} is not a valid UID (digits and dots, 1 to {UID_MAX_LENGTH} characters)")
    return str(value)
