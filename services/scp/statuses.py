"""DIMSE status codes the SCP answers with (PS3.4 Annex B and C), in one place."""

from __future__ import annotations

from pydicom.dataset import Dataset

SUCCESS = 0x0000
OUT_OF_RESOURCES_FULL = 0xA700  # Refused: Out of Resources (storage full)
OUT_OF_RESOURCES_UNAVAILABLE = 0xA701  # Refused: Out of Resources (object store unavailable)
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # Error: dataset's SOP Class/Instance UID differs from the command
CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand (dataset cannot be parsed)
INVALID_IDENTITY = 0xC001  # Error: Cannot understand (identifying UIDs missing or invalid)
PROCESSING_FAILURE = 0x0110  # Failure: Processing failure (unexpected error)


def failure(status: int, comment: str) -> Dataset:
    """A status answer with an Error Comment (0000,0902), which is at most 64 characters."""
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment[:64]
    return answer
