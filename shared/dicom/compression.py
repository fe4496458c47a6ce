"""Lossless compression of received instances before they are stored (the live ``ingest_compression`` key).

Only native (uncompressed) little-endian pixel data that the chosen codec can hold is compressed; everything else
is stored as received. The result is checked before it is used: the compressed frames are decoded again and must
give, bit for bit, the received pixel data, or the instance is stored as received. The rest of the dataset is
re-encoded in Explicit VR Little Endian (what every compressed transfer syntax uses), value for value; its SOP
Instance UID is kept (same instance, other encoding). Encoding is deterministic, so an identical re-send
compresses to identical bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from io import BytesIO

import numpy
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

log = logging.getLogger(__name__)

SYNTAX_OF: dict[str, UID] = {  # ingest_compression value -> transfer syntax ("none": not compressed)
    "jpeg_ls_lossless": JPEGLSLossless,
    "jpeg2000_lossless": JPEG2000Lossless,
    "rle_lossless": RLELossless,
}
NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)  # big endian is stored as received
# What each codec holds (PS3.5 8.2: JPEG-LS and JPEG 2000 up to 16 bits per sample as used here; RLE up to 32).
MAX_BITS_ALLOCATED = {JPEGLSLossless: 16, JPEG2000Lossless: 16, RLELossless: 32}
PHOTOMETRICS = {"MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR"}


@dataclass(frozen=True)
class Compressed:
    dataset: bytes  # the dataset (no File Meta), encoded in ``transfer_syntax``
    transfer_syntax: str


def compress(dataset: bytes, transfer_syntax: str, method: str) -> Compressed | None:
    """The dataset compressed with ``method`` (a value of the live key ``ingest_compression``), or None when it is to be stored as received:
    method "none", no native pixel data, pixel data the codec cannot hold, a result that does not decode to
    the same pixel values, or one that is not smaller."""
    target = SYNTAX_OF.get(method)
    if target is None or transfer_syntax not in NATIVE_SYNTAXES:
        return None
    try:
        parsed = _read(dataset, transfer_syntax)
    except Exception:  # unreadable here: the indexer reports it; the bytes are stored as received
        return None
    if not _codec_holds(parsed, target):
        return None
    received_pixels = bytes(parsed.PixelData)
    try:
        parsed.compress(target, parsed.pixel_array, generate_instance_uid=False)
        if not _same_pixel_bytes(_decoded(parsed), received_pixels):
            log.info("compression.not_lossless syntax=%s stored=as_received", target)
            return None
        encoded = _encode(parsed)
        if len(encoded) >= len(dataset):
            return None  # nothing gained (noise-like pixels): keep what came
        return Compressed(encoded, str(target))
    except Exception as exc:  # a codec that refuses these pixels: keep them as they came
        log.info("compression.skipped syntax=%s error=%s", target, exc.__class__.__name__)
        return None


def _read(dataset: bytes, transfer_syntax: str) -> Dataset:
    syntax = UID(transfer_syntax)
    parsed = read_dataset(BytesIO(dataset), syntax.is_implicit_VR, syntax.is_little_endian)
    if syntax.is_implicit_VR:
        for _ in parsed.iterall():  # every element gets its VR (dictionary, else UN) to be written explicitly
            pass
    parsed.file_meta = FileMetaDataset()
    parsed.file_meta.TransferSyntaxUID = syntax
    return parsed


def _codec_holds(parsed: Dataset, target: UID) -> bool:
    if "PixelData" not in parsed or parsed["PixelData"].is_undefined_length:
        return False  # no pixels (or float/double pixel data), or already encapsulated
    try:
        bits_allocated = int(parsed.BitsAllocated)
        samples = int(parsed.SamplesPerPixel)
        photometric = str(parsed.PhotometricInterpretation)
        frames = int(parsed.get("NumberOfFrames") or 1)
        int(parsed.BitsStored), int(parsed.Rows), int(parsed.Columns), int(parsed.PixelRepresentation)
    except (AttributeError, TypeError, ValueError):
        return False
    if bits_allocated not in (8, 16, 32) or bits_allocated > MAX_BITS_ALLOCATED[target] or frames < 1:
        return False
    if samples == 3 and (photometric != "RGB" or int(parsed.get("PlanarConfiguration", 0)) != 0):
        return False  # YBR and planar colour: left as received (their conversions are not lossless-safe)
    return samples in (1, 3) and photometric in PHOTOMETRICS


def _decoded(compressed: Dataset) -> numpy.ndarray:
    check = Dataset()
    check.update(compressed)  # the same elements, decoded afresh (not the cached array of the original)
    check.file_meta = compressed.file_meta
    return check.pixel_array


def _same_pixel_bytes(decoded: numpy.ndarray, received: bytes) -> bool:
    """Whether the decoded pixels are, bit for bit, the received pixel data (bits above Bits Stored included:
    a value that does not fit is not truncated silently). The frames, rows, columns and interleaved samples of a
    C-ordered array are laid out as native pixel data is."""
    as_sent = decoded.astype(decoded.dtype.newbyteorder("<"), copy=False).tobytes()
    return received[:len(as_sent)] == as_sent and not any(received[len(as_sent):])  # at most a padding byte


def _encode(compressed: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    compressed.set_original_encoding(False, True, compressed.original_character_set)
    write_dataset(buffer, compressed)
    return buffer.getvalue()
