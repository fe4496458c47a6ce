"""Decode a stored instance to an uncompressed little-endian transfer syntax (C-MOVE/C-GET, WADO-RS).

The instance keeps its SOP Instance UID (same instance, other encoding). JPEG, JPEG-LS, JPEG 2000 and RLE are
decoded by the installed pylibjpeg/openjpeg/JPEG-LS plugins; anything else raises.
"""

from __future__ import annotations

import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def to_uncompressed(dataset: pydicom.Dataset, target: str = ExplicitVRLittleEndian) -> pydicom.Dataset:
    """Re-encode ``dataset`` (read with its File Meta) in place for ``target``; raise when it cannot be decoded."""
    syntax = dataset.file_meta.TransferSyntaxUID
    if syntax.is_compressed:
        # Same instance, other encoding: it keeps its SOP Instance UID (pydicom would make a new one).
        dataset.decompress(generate_instance_uid=False)  # raises when no decoder handles the syntax
    elif not syntax.is_little_endian and "PixelData" in dataset:
        # Big endian: the pixel words are swapped through their array; other values re-encode as they are.
        pixels = dataset.pixel_array
        dataset.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    dataset.file_meta.TransferSyntaxUID = UID(target)
    dataset.set_original_encoding(target == ImplicitVRLittleEndian, True, dataset.original_character_set)
    return dataset
