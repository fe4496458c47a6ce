"""URLs of DICOMweb answers (RetrieveURL) and UIDs taken from request paths."""

from __future__ import annotations

from fastapi import HTTPException, Request

from shared.uids import is_valid_uid

PREFIX = "/dicomweb"


def dicomweb_base(request: Request) -> str:
    """The absolute URL of the DICOMweb root as the client reached it (scheme, host, any proxy root path)."""
    return str(request.base_url).rstrip("/") + PREFIX


def require_path_uid(value: str) -> str:
    """A UID from the path; anything else is a bad request (it never reaches a key, a path or a log line)."""
    if not is_valid_uid(value):
        raise HTTPException(400, "not a valid UID (digits and dots, at most 64 characters)")
    return value
