"""Objects are Part-10 files: zeroed preamble, our own File Meta, the dataset bytes exactly as received."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from shared.dicom.part10 import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    NotOurPart10,
    encode_part10,
    skip_file_meta,
)
from tests.factory import UNCOMPRESSED_SYNTAXES, dataset_start, encode_dataset, make_image


def part10_of(transfer_syntax: str = ExplicitVRLittleEndian, **image: str) -> tuple[bytes, bytes, pydicom.Dataset]:
    source = make_image(**image)
    dataset = encode_dataset(source, transfer_syntax)
    return encode_part10(dataset, source.SOPClassUID, source.SOPInstanceUID, transfer_syntax), dataset, source


@pytest.mark.parametrize("transfer_syntax", UNCOMPRESSED_SYNTAXES)
def test_pydicom_reads_our_file_meta(transfer_syntax: str) -> None:
    part10, _, source = part10_of(transfer_syntax)
    read = pydicom.dcmread(BytesIO(part10))
    meta = read.file_meta
    assert meta.MediaStorageSOPClassUID == source.SOPClassUID
    assert meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    assert meta.TransferSyntaxUID == transfer_syntax
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert read.SOPInstanceUID == source.SOPInstanceUID and read.PatientName == source.PatientName


def test_group_length_covers_exactly_the_rest_of_the_file_meta() -> None:
    part10, dataset, _ = part10_of()
    meta = pydicom.dcmread(BytesIO(part10)).file_meta
    assert 144 + meta.FileMetaInformationGroupLength == len(part10) - len(dataset)


def test_preamble_is_zeroed_and_followed_by_dicm() -> None:
    part10, _, _ = part10_of()
    assert part10[:128] == b"\x00" * 128 and part10[128:132] == b"DICM"
    assert pydicom.dcmread(BytesIO(part10)).preamble == b"\x00" * 128


@pytest.mark.parametrize("transfer_syntax", UNCOMPRESSED_SYNTAXES)
def test_dataset_bytes_are_kept_unchanged(transfer_syntax: str) -> None:
    part10, dataset, _ = part10_of(transfer_syntax)
    assert part10[dataset_start(part10):] == dataset


def test_the_same_input_always_gives_the_same_bytes() -> None:
    source = make_image()
    dataset = encode_dataset(source, ExplicitVRBigEndian)
    first = encode_part10(dataset, source.SOPClassUID, source.SOPInstanceUID, ExplicitVRBigEndian)
    second = encode_part10(bytes(dataset), source.SOPClassUID, source.SOPInstanceUID, ExplicitVRBigEndian)
    assert first == second


def test_odd_length_uids_are_padded_with_nul() -> None:
    part10 = encode_part10(b"", CTImageStorage, "1.2.345", ImplicitVRLittleEndian)  # 25, 7, 17 characters
    meta = part10[:dataset_start(part10)]
    assert (CTImageStorage + "\x00").encode() in meta
    assert b"1.2.345\x00" in meta
    assert (ImplicitVRLittleEndian + "\x00").encode() in meta
    assert pydicom.dcmread(BytesIO(part10)).file_meta.MediaStorageSOPInstanceUID == "1.2.345"


def test_even_length_uids_are_not_padded() -> None:
    part10 = encode_part10(b"", CTImageStorage, "1.2.34", DeflatedExplicitVRLittleEndian)
    assert b"\x06\x001.2.34" in part10  # length 6, value unpadded


@pytest.mark.parametrize("transfer_syntax", UNCOMPRESSED_SYNTAXES)
def test_skip_file_meta_leaves_a_stored_object_at_its_first_data_set_byte(transfer_syntax: str) -> None:
    part10, dataset, _ = part10_of(transfer_syntax)
    stream = BytesIO(part10)
    skip_file_meta(stream)
    assert stream.read() == dataset


@pytest.mark.parametrize("not_ours", [b"", b"\x00" * 128 + b"DICM", b"\x00" * 200,
                                      b"\x00" * 128 + b"DICM" + bytes.fromhex("02001000") + b"UI\x04\x001.2\x00",
                                      b"\x00" * 128 + b"DICM" + bytes.fromhex("02000000") + b"UL\x04\x00\xff\x00\x00\x00"])
def test_skip_file_meta_refuses_what_the_node_did_not_write(not_ours: bytes) -> None:
    with pytest.raises(NotOurPart10):
        skip_file_meta(BytesIO(not_ours))
