"""Lossless compression on ingest: what gets compressed, that it is lossless, and what is stored as received."""

from __future__ import annotations

from io import BytesIO

import numpy
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    UltrasoundImageStorage,
)

from shared.dicom.compression import SYNTAX_OF, compress
from tests.factory import encode_dataset, make_image

METHODS = sorted(SYNTAX_OF)


def ct_with_a_disc(rows: int = 128, columns: int = 128, frames: int = 1) -> tuple[Dataset, numpy.ndarray]:
    """A 12-bit CT-like image (a bright disc on a dark field, a little noise): compressible, every value in range."""
    dataset = make_image(rows=rows, columns=columns)
    y, x = numpy.mgrid[0:rows, 0:columns]
    disc = (numpy.hypot(y - rows / 2, x - columns / 2) < rows / 3) * 1200
    noise = numpy.random.default_rng(7).integers(0, 16, (frames, rows, columns))
    pixels = (disc + noise).astype("<u2")
    if frames > 1:
        dataset.NumberOfFrames = frames
    dataset.PixelData = pixels.tobytes()
    return dataset, pixels if frames > 1 else pixels[0]


def decoded(compressed_dataset: bytes, transfer_syntax: str) -> Dataset:
    dataset = read_dataset(BytesIO(compressed_dataset), False, True)
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = transfer_syntax
    return dataset


@pytest.mark.parametrize("method", METHODS)
def test_each_method_gives_its_syntax_the_same_pixels_and_the_same_attributes(method: str) -> None:
    original, pixels = ct_with_a_disc()
    received = encode_dataset(original, ExplicitVRLittleEndian)
    compressed = compress(received, ExplicitVRLittleEndian, method)
    assert compressed is not None
    assert compressed.transfer_syntax == SYNTAX_OF[method]
    assert len(compressed.dataset) < len(received)
    back = decoded(compressed.dataset, compressed.transfer_syntax)
    assert numpy.array_equal(back.pixel_array, pixels)
    for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "PatientName", "PatientID", "Rows",
                    "BitsStored", "InstanceNumber"):
        assert back[keyword].value == original[keyword].value, keyword


def test_implicit_vr_input_compresses_to_the_same_bytes_as_explicit_and_every_time() -> None:
    original, _ = ct_with_a_disc()
    explicit = compress(encode_dataset(original, ExplicitVRLittleEndian), ExplicitVRLittleEndian, "jpeg_ls_lossless")
    implicit = compress(encode_dataset(original, ImplicitVRLittleEndian), ImplicitVRLittleEndian, "jpeg_ls_lossless")
    again = compress(encode_dataset(original, ImplicitVRLittleEndian), ImplicitVRLittleEndian, "jpeg_ls_lossless")
    assert explicit is not None and implicit is not None and again is not None
    assert implicit.dataset == explicit.dataset == again.dataset


def test_multi_frame_and_rgb_images_are_compressed() -> None:
    frames, pixels = ct_with_a_disc(64, 64, frames=3)
    compressed = compress(encode_dataset(frames), ExplicitVRLittleEndian, "jpeg2000_lossless")
    assert compressed is not None
    assert numpy.array_equal(decoded(compressed.dataset, JPEG2000Lossless).pixel_array, pixels)

    colour = make_image(UltrasoundImageStorage, rows=64, columns=64)
    colour.SamplesPerPixel, colour.PhotometricInterpretation, colour.PlanarConfiguration = 3, "RGB", 0
    colour.BitsAllocated, colour.BitsStored, colour.HighBit = 8, 8, 7
    rgb = numpy.zeros((64, 64, 3), "u1")
    rgb[16:48, 16:48] = (200, 40, 90)
    colour.PixelData = rgb.tobytes()
    compressed = compress(encode_dataset(colour), ExplicitVRLittleEndian, "jpeg_ls_lossless")
    assert compressed is not None
    assert numpy.array_equal(decoded(compressed.dataset, JPEGLSLossless).pixel_array, rgb)


def test_none_stores_as_received() -> None:
    original, _ = ct_with_a_disc()
    assert compress(encode_dataset(original), ExplicitVRLittleEndian, "none") is None


@pytest.mark.parametrize("method", METHODS)
def test_values_beyond_bits_stored_are_stored_as_received_never_truncated(method: str) -> None:
    """16 bits allocated, 12 stored, values up to 0xFFFF: a codec told 12 bits would drop the top bits."""
    dataset = make_image(rows=64, columns=64)
    dataset.PixelData = numpy.full((64, 64), 0xF123, "<u2").tobytes()
    assert compress(encode_dataset(dataset), ExplicitVRLittleEndian, method) is None


@pytest.mark.parametrize("method", METHODS)
def test_signed_pixels_keep_their_sign_extended_bytes(method: str) -> None:
    dataset, _ = ct_with_a_disc(64, 64)
    dataset.PixelRepresentation = 1
    pixels = (numpy.frombuffer(dataset.PixelData, "<u2").astype("<i2") - 1024).reshape(64, 64)  # down to -1024
    dataset.PixelData = pixels.tobytes()
    compressed = compress(encode_dataset(dataset), ExplicitVRLittleEndian, method)
    assert compressed is not None
    assert decoded(compressed.dataset, compressed.transfer_syntax).pixel_array.astype("<i2").tobytes() == \
        pixels.tobytes()


def test_what_the_codec_cannot_hold_or_should_not_touch_is_stored_as_received() -> None:
    original, _ = ct_with_a_disc()
    assert compress(encode_dataset(original, ExplicitVRBigEndian), ExplicitVRBigEndian, "jpeg_ls_lossless") is None
    assert compress(encode_dataset(original), RLELossless, "jpeg_ls_lossless") is None  # already compressed

    no_pixels = make_image()
    del no_pixels.PixelData
    assert compress(encode_dataset(no_pixels), ExplicitVRLittleEndian, "jpeg_ls_lossless") is None

    wide = make_image(rows=32, columns=32)
    wide.BitsAllocated, wide.BitsStored, wide.HighBit = 32, 32, 31
    wide.PixelData = numpy.zeros((32, 32), "<u4").tobytes()
    assert compress(encode_dataset(wide), ExplicitVRLittleEndian, "jpeg_ls_lossless") is None  # JPEG-LS: ≤ 16 bits

    ybr = make_image(UltrasoundImageStorage, rows=32, columns=32)
    ybr.SamplesPerPixel, ybr.PhotometricInterpretation, ybr.PlanarConfiguration = 3, "YBR_FULL", 0
    ybr.BitsAllocated, ybr.BitsStored, ybr.HighBit = 8, 8, 7
    ybr.PixelData = bytes(32 * 32 * 3)
    assert compress(encode_dataset(ybr), ExplicitVRLittleEndian, "jpeg_ls_lossless") is None


def test_noise_that_does_not_shrink_is_stored_as_received() -> None:
    dataset = make_image(rows=64, columns=64)
    dataset.BitsStored, dataset.HighBit = 16, 15
    dataset.PixelData = numpy.random.default_rng(1).integers(0, 0xFFFF, (64, 64), dtype="<u2").tobytes()
    assert compress(encode_dataset(dataset), ExplicitVRLittleEndian, "rle_lossless") is None


def test_an_unreadable_dataset_is_left_to_the_indexer() -> None:
    assert compress(b"\x08\x00\x16\x00UI\xff\xff", ExplicitVRLittleEndian, "jpeg_ls_lossless") is None
