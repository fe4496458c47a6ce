"""Read only what the SCP needs from a received dataset: the four identifying UIDs.

The rest of the dataset (and its pixel data) is left to the indexer; parsing stops after
Series Instance UID (0020,000E), which keeps the ingest path cheap.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from io import BytesIO

from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, UID

from shared.uids import require_uid

SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
_INFLATE_STEPS = (1 << 20, 64 << 20)  # inflate a prefix first; a deflated header never needs more


class UnreadableDataset(ValueError):
    """The dataset cannot be parsed in its transfer syntax."""


@dataclass(frozen=True)
class InstanceIdentity:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str


def _stop_after_series_uid(tag: int, _vr: str | None, _length: int) -> bool:
    return tag > SERIES_INSTANCE_UID


def _read_header(encoded: bytes, transfer_syntax: UID) -> dict[int, object]:
    dataset = read_dataset(
        BytesIO(encoded),
        is_implicit_VR=transfer_syntax.is_implicit_VR,
        is_little_endian=transfer_syntax.is_little_endian,
        stop_when=_stop_after_series_uid,
    )
    values: dict[int, object] = {}
    for tag in (SOP_CLASS_UID, SOP_INSTANCE_UID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID):
        if tag not in dataset:
            continue
        raw = dataset.get_item(tag)
        if raw is not None and getattr(raw, "length", 0) != 0xFFFFFFFF and len(raw.value or b"") < raw.length:
            raise UnreadableDataset("dataset ends inside an element")
        values[tag] = dataset[tag].value
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
        if len(values) == 4 or complete:
            return values
    raise UnreadableDataset("deflated header larger than the node reads")


def identify(dataset: bytes, transfer_syntax_uid: str) -> InstanceIdentity:
    """Return the identifying UIDs; raise UnreadableDataset or shared.uids.InvalidUID."""
    transfer_syntax = UID(transfer_syntax_uid)
    try:
        if transfer_syntax == DeflatedExplicitVRLittleEndian:
            values = _inflated_headers(dataset)
        else:
            values = _read_header(dataset, transfer_syntax)
    except zlib.error as exc:
        raise UnreadableDataset("deflated dataset cannot be inflated") from exc
    except UnreadableDataset:
        raise
    except Exception as exc:  # pydicom raises many kinds on malformed input
        raise UnreadableDataset(f"dataset cannot be parsed ({exc.__class__.__name__})") from exc
    return InstanceIdentity(
        sop_class_uid=require_uid(values.get(SOP_CLASS_UID), "SOP Class UID (0008,0016)"),
        sop_instance_uid=require_uid(values.get(SOP_INSTANCE_UID), "SOP Instance UID (0008,0018)"),
        study_instance_uid=require_uid(values.get(STUDY_INSTANCE_UID), "Study Instance UID (0020,000D)"),
        series_instance_uid=require_uid(values.get(SERIES_INSTANCE_UID), "Series Instance UID (0020,000E)"),
    )
