"""Turn a stored Part-10 object into the values the index keeps (text decoded to Unicode)."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from typing import Any, BinaryIO

from services.indexer.lean_errors import LeftToPydicom
from services.indexer.lean_record import read_lean
from services.indexer.pydicom_record import read_with_pydicom
from services.indexer.record_fields import ReadObject
from shared.dicom.names import accent_free, folded
from shared.digest import read_chunks, size_and_sha256
from shared.storage import direct_io

log = logging.getLogger(__name__)

HEAD_BYTES = 1 << 20  # of a stored object, kept while it is hashed: enough for the data set before its pixel data
KNOWN_HEAD_BYTES = 64 << 10  # read of an object whose size and hash are known: the attributes before the pixel data
NO_PATIENT_ID_PREFIX = "~no-id~"  # longer than any legal PatientID once a UID follows: never collides


class UnindexableObject(ValueError):
    """The object cannot be parsed or lacks what the index needs; it goes to the dead-letter list."""


@dataclass(frozen=True)
class KnownContent:
    """The size and SHA-256 of an object, as its writer computed them (told by a stamped event)."""

    size: int
    sha256: str


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
    attributes: dict[str, Any]  # DICOM JSON model of the non-bulk attributes
    attributes_json: str  # ``attributes`` as json.dumps writes them (what the index stores)


def _read(part10: bytes | BinaryIO) -> tuple[int, str, bytes, bool]:
    """(size, SHA-256, the first bytes, whether they are the whole object), reading a stream once."""
    if isinstance(part10, bytes):
        size, sha256 = size_and_sha256([part10])
        return size, sha256, part10, True
    part10.seek(0)
    head = part10.read(HEAD_BYTES)
    digest, size, complete = hashlib.sha256(head), len(head), True
    for chunk in read_chunks(part10):
        digest.update(chunk)
        size += len(chunk)
        complete = False
    return size, digest.hexdigest(), head, complete


def _read_known(part10: BinaryIO, known: KnownContent) -> tuple[int, str, bytes, bool] | None:
    """(size, SHA-256, the first bytes, whether they are the whole object) without hashing; None when the object
    is shorter than it was said to be."""
    wanted = min(known.size, KNOWN_HEAD_BYTES)
    head = _read_large_head(part10, wanted) if known.size >= direct_io.DIRECT_MIN_BYTES else None
    if head is None:
        part10.seek(0)
        head = part10.read(wanted)
    if len(head) != wanted:
        return None
    return known.size, known.sha256, head, len(head) == known.size


def _read_large_head(part10: BinaryIO, length: int) -> bytes | None:
    """The first bytes of a large local object read around the page cache, as the local store wrote it
    (shared.storage.direct_io); None for a stream that is no local file, or a file system that refuses."""
    if not isinstance(part10, (io.BufferedReader, io.FileIO)):
        return None  # (a spooled copy of a remote object would be written to disk by asking for its descriptor)
    with direct_io.read_head(part10.fileno(), length) as head:
        return None if head is None else bytes(head)


def _read_with_pydicom(part10: bytes | BinaryIO) -> ReadObject:
    if not isinstance(part10, bytes):
        part10.seek(0)
    try:
        return read_with_pydicom(part10)
    except (Exception, RecursionError) as exc:  # pydicom raises many kinds on malformed input
        raise UnindexableObject(f"cannot parse the stored object ({exc.__class__.__name__})") from exc


def extract(part10: bytes | BinaryIO, known: KnownContent | None = None) -> IndexRecord:
    """The index record of a stored object: its bytes, or a seekable file (read once, hashed a chunk at a time;
    only its first HEAD_BYTES are kept, so a large object is never held whole). The lean reader reads the record
    when those bytes hold everything before the pixel data; pydicom reads whatever it leaves. With ``known`` (the
    caller made sure the file is the one its writer described), only the first KNOWN_HEAD_BYTES are read and
    nothing is hashed."""
    told = _read_known(part10, known) if known is not None and not isinstance(part10, bytes) else None
    size, sha256, head, complete = told if told is not None else _read(part10)
    try:
        read = read_lean(head, complete)
    except LeftToPydicom as exc:
        log.debug("index.read_by_pydicom reason=%s", exc)
        read = _read_with_pydicom(part10)
    except Exception as exc:  # a malformed object: pydicom's reading decides what it is
        log.debug("index.read_by_pydicom reason=%s", exc.__class__.__name__)
        read = _read_with_pydicom(part10)
    columns = read.columns
    patient_name = columns["patient_name"]
    return IndexRecord(
        patient_key=columns["patient_id"] or NO_PATIENT_ID_PREFIX + columns["study_instance_uid"],
        patient_name_folded=folded(patient_name),
        patient_name_search=accent_free(patient_name),
        size=size,
        sha256=sha256,
        attributes=read.attributes,
        attributes_json=read.attributes_json,
        **columns,
    )
