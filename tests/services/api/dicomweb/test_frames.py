"""Frames of stored instances: native, big endian, and the compressed samples (stored or decoded)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi import HTTPException
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from services.api.dicomweb.frames import extract_frames, frame_numbers
from tests.factory import COMPRESSED_SAMPLES, make_image, save

ANY = 'multipart/related; type="*/*"'
UNCOMPRESSED_ONLY = "multipart/related; type=application/octet-stream"


def multiframe(path: Path, syntax: str, frames: int = 3) -> tuple[bytes, np.ndarray]:
    ds = make_image(rows=4, columns=5)
    pixels = np.arange(frames * 4 * 5, dtype=np.uint16).reshape(frames, 4, 5) * 37
    ds.NumberOfFrames = frames
    ds.PixelData = pixels.astype("<u2").tobytes()
    save(ds, path, syntax)
    if syntax == ExplicitVRBigEndian:  # pydicom writes the pixel bytes as given: give it big-endian words
        stored = pydicom.dcmread(path)
        stored.PixelData = pixels.astype(">u2").tobytes()
        stored.save_as(path, enforce_file_format=True)
    return path.read_bytes(), pixels


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_native_frames_are_little_endian_slices(tmp_path: Path, syntax: str) -> None:
    encoded, pixels = multiframe(tmp_path / "mf.dcm", syntax)
    plan, frames = extract_frames(encoded, [3, 1], ANY)
    assert plan.content_type == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    assert frames == [pixels[2].astype("<u2").tobytes(), pixels[0].astype("<u2").tobytes()]


@pytest.mark.parametrize("sample", COMPRESSED_SAMPLES, ids=lambda path: path.name)
def test_compressed_frames_as_stored_or_decoded(sample: Path) -> None:
    encoded = sample.read_bytes()
    ds = pydicom.dcmread(BytesIO(encoded))
    plan, [frame] = extract_frames(encoded, [1], ANY)
    assert not plan.decode and plan.content_type.endswith(f"transfer-syntax={ds.file_meta.TransferSyntaxUID}")
    assert frame == next(generate_frames(ds.PixelData, number_of_frames=1))
    plan, [decoded] = extract_frames(encoded, [1], UNCOMPRESSED_ONLY)
    assert plan.decode
    assert decoded == np.ascontiguousarray(ds.pixel_array).tobytes()


def test_frame_numbers_beyond_the_instance_or_malformed_are_refused(tmp_path: Path) -> None:
    encoded, _ = multiframe(tmp_path / "mf.dcm", ExplicitVRLittleEndian, frames=2)
    with pytest.raises(HTTPException) as beyond:
        extract_frames(encoded, [3], ANY)
    assert beyond.value.status_code == 404
    for text in ("0", "a", "", "1,-2"):
        with pytest.raises(HTTPException) as bad:
            frame_numbers(text)
        assert bad.value.status_code == 400
    with pytest.raises(HTTPException) as not_acceptable:
        extract_frames(encoded, [1], 'multipart/related; type="image/jpeg"')
    assert not_acceptable.value.status_code == 406
