"""Read only what ingest (C-STORE, STOW-RS) needs from a received dataset: the four identifying UIDs, plus the
PatientID and InstanceNumber that storage layouts may use (shared.storage.layout sanitises them).

The rest of the dataset (and its pixel data) is left to the indexer; parsing stops after
Instance Number (0020,0013), which keeps the ingest path cheap.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO

from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, UID

from shared.dicom import header_scan
from shared.uids import InvalidUID, require_uid

SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
PATIENT_ID = 0x00100020
INSTANCE_NUMBER = 0x00200013
_UID_TAGS = (SOP_CLASS_UID, SOP_INSTANCE_UID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID)
_SCANNED_TAGS = frozenset((*_UID_TAGS, PATIENT_ID, INSTANCE_NUMBER))
_PLAIN_INTEGER = re.compile(r"[+-]?[0-9]{1,12}")
_LITTLE_ENDIAN_VR: dict[str, bool | None] = {}
_INFLATE_STEPS = (1 << 20, 64 << 20)  # inflate a prefix first; a deflated header never needs more


class UnreadableDataset(ValueError):
    """The dataset cannot be parsed in its transfer syntax."""


@dataclass(frozen=True)
class InstanceIdentity:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str | None = field(default=None, repr=False)  # as received: never trusted in a key or a log
    instance_number: int | None = None


def _stop_after_instance_number(tag: int, _vr: str | None, _length: int) -> bool:
    return tag > INSTANCE_NUMBER


def _optional_values(dataset: object) -> dict[int, object]:
    """PatientID and InstanceNumber when readable; a malformed one is simply left out."""
    values: dict[int, object] = {}
    for tag in (PATIENT_ID, INSTANCE_NUMBER):
        try:
            if tag in dataset:  # type: ignore[operator]
                values[tag] = dataset[tag].value  # type: ignore[index]
        except Exception:
            continue
    return values


def _read_header(encoded: bytes, transfer_syntax: UID) -> dict[int, object]:
    dataset = read_dataset(
        BytesIO(encoded),
        is_implicit_VR=transfer_syntax.is_implicit_VR,
        is_little_endian=transfer_syntax.is_little_endian,
        stop_when=_stop_after_instance_number,
    )
    values: dict[int, object] = {}
    for tag in _UID_TAGS:
        if tag not in dataset:
            continue
        raw = dataset.get_item(tag)
        if raw is not None and getattr(raw, "length", 0) != 0xFFFFFFFF and len(raw.value or b"") < raw.length:
            raise UnreadableDataset("dataset ends inside an element")
        values[tag] = dataset[tag].value
    values.update(_optional_values(dataset))
    return values


def _inflated_headers(dataset: bytes) -> dict[int, object]:
    """Inflate a prefix (growing it when the header is larger) and read the identifying UIDs from it."""
    for limit in _INFLATE_STEPS:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        prefix = inflater.decompress(dataset, limit)
        complete = not inflater.unconsumed_tail
        try:
            values = _read_header(prefix, UID("1.2.840.10008.1.2.1"))
        except Exception:
            if complete:
                raise  # the whole dataset was inflated: it really is malformed
            continue  # the prefix ended inside an element: inflate more
        if all(tag in values for tag in _UID_TAGS) or complete:
            return values
    raise UnreadableDataset("deflated header larger than the node reads")


def _scanned_headers(dataset: bytes, explicit_vr: bool) -> dict[int, object] | None:
    """The values ``_read_header`` would give, read by shared.dicom.header_scan; None where only pydicom can tell
    (anything not plain: non-ASCII or multi-valued values, a damaged data set)."""
    try:
        raw = header_scan.scan(dataset, explicit_vr, _SCANNED_TAGS, INSTANCE_NUMBER)
    except header_scan.NotPlain:
        return None
    values: dict[int, object] = {}
    for tag, value in raw.items():
        if b"\\" in value or b"\x1b" in value or not value.isascii():
            return None
        text = value.decode("ascii")
        if tag == INSTANCE_NUMBER:
            text = text.strip("\x00 ")
            if text and _PLAIN_INTEGER.fullmatch(text) is None:
                return None
            values[tag] = int(text) if text else ""
        else:
            values[tag] = text
    return values


def _little_endian_vr(transfer_syntax: UID) -> bool | None:
    """True for Explicit VR, False for Implicit VR Little Endian; None for a syntax only pydicom reads here."""
    known = _LITTLE_ENDIAN_VR.get(transfer_syntax)
    if known is None and transfer_syntax not in _LITTLE_ENDIAN_VR:
        try:
            plain = (transfer_syntax.is_transfer_syntax and transfer_syntax.is_little_endian
                     and not transfer_syntax.is_deflated)
            known = (not transfer_syntax.is_implicit_VR) if plain else None
        except ValueError:
            known = None
        if len(_LITTLE_ENDIAN_VR) < 1000:
            _LITTLE_ENDIAN_VR[transfer_syntax] = known
    return known


def identify(dataset: bytes, transfer_syntax_uid: str) -> InstanceIdentity:
    """Return the identifying UIDs; raise UnreadableDataset or shared.uids.InvalidUID."""
    transfer_syntax = UID(transfer_syntax_uid)
    explicit_vr = _little_endian_vr(transfer_syntax)
    scanned = _scanned_headers(dataset, explicit_vr) if explicit_vr is not None else None
    try:
        if scanned is not None:
            values = scanned
        elif transfer_syntax == DeflatedExplicitVRLittleEndian:
            values = _inflated_headers(dataset)
        else:
            values = _read_header(dataset, transfer_syntax)
    except zlib.error as exc:
        raise UnreadableDataset("deflated dataset cannot be inflated") from exc
    except UnreadableDataset:
        raise
    except Exception as exc:  # pydicom raises many kinds on malformed input
        raise UnreadableDataset(f"dataset cannot be parsed ({exc.__class__.__name__})") from exc
    return identity_of(values)


def identity_of(values: dict[int, object]) -> InstanceIdentity:
    """The identity from the values read (raw for the scan, converted by pydicom otherwise); InvalidUID if a
    UID is missing or invalid."""
    return InstanceIdentity(
        sop_class_uid=require_uid(values.get(SOP_CLASS_UID), "SOP Class UID (0008,0016)"),
        sop_instance_uid=require_uid(values.get(SOP_INSTANCE_UID), "SOP Instance UID (0008,0018)"),
        study_instance_uid=require_uid(values.get(STUDY_INSTANCE_UID), "Study Instance UID (0020,000D)"),
        series_instance_uid=require_uid(values.get(SERIES_INSTANCE_UID), "Series Instance UID (0020,000E)"),
        patient_id=_patient_id(values.get(PATIENT_ID)),
        instance_number=_instance_number(values.get(INSTANCE_NUMBER)),
    )


HEAD_STEPS = (1 << 20, 64 << 20)  # how much of a spooled data set identify reads: a prefix, then a larger one


def identify_head(head: Callable[[int], bytes], size: int, transfer_syntax_uid: str) -> InstanceIdentity:
    """Identify a data set too large to hold in memory from its first bytes (``head(n)``: at most n of them).

    The identifying elements come first in a data set; a prefix that ends before them (or inside one) is grown
    once; what the larger prefix gives is the answer (its error too: an invalid UID, or a header larger than the
    node reads).
    """
    *smaller, largest = HEAD_STEPS
    for limit in smaller:
        prefix = head(limit)
        try:
            return identify(prefix, transfer_syntax_uid)
        except (UnreadableDataset, InvalidUID):
            if len(prefix) >= size:
                raise  # the whole data set was read: it really is malformed
    return identify(head(largest), transfer_syntax_uid)


def _patient_id(value: object) -> str | None:
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return text.strip("\x00 ")[:64]


def _instance_number(value: object) -> int | None:
    if isinstance(value, (list, tuple)) or value in (None, ""):
        return None
    try:
        number = int(str(value).strip("\x00 "))
    except ValueError:
        return None
    return number if 0 <= number < 2**31 else None
