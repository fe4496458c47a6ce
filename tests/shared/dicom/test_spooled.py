"""A received data set in memory while small, in an anonymous spool file once larger than its limit."""

from __future__ import annotations

from pathlib import Path

from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from shared.dicom.spooled import SpooledDataset
from tests.factory import make_image


def test_a_small_data_set_stays_in_memory(tmp_path: Path) -> None:
    data = SpooledDataset(tmp_path, limit=100)
    data.write(b"a" * 60)
    data.write(b"b" * 40)
    assert not data.spilled and data.size == 100 and data.getvalue() == b"a" * 60 + b"b" * 40


def test_the_write_that_crosses_the_limit_moves_everything_to_a_file_that_has_no_name(tmp_path: Path) -> None:
    data = SpooledDataset(tmp_path, limit=100)
    data.write(b"a" * 60)
    data.write(b"b" * 60)
    data.write(b"c" * 10)
    assert data.spilled and data.size == 130
    assert list(tmp_path.iterdir()) == []  # anonymous: a crash leaves nothing to clean up
    assert data.head(70) == b"a" * 60 + b"b" * 10
    data.write(b"d")  # appended even after a read moved the position
    assert b"".join(data.chunks(chunk_bytes=16)) == b"a" * 60 + b"b" * 60 + b"c" * 10 + b"d"
    assert [len(chunk) for chunk in data.chunks(chunk_bytes=64)] == [64, 64, 3]
    assert data.getvalue() == b"".join(data.chunks())
    data.close()


def test_a_spilled_data_set_still_reads_as_a_stream(tmp_path: Path) -> None:
    """pynetdicom decodes identifiers (C-FIND, C-MOVE) by reading the BytesIO it was given."""
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, True
    write_dataset(encoded, make_image(patient_id="SPOOLED"))
    data = SpooledDataset(tmp_path, limit=64)
    data.write(encoded.getvalue())
    assert data.spilled
    data.seek(0)
    assert read_dataset(data, is_implicit_VR=True, is_little_endian=True).PatientID == "SPOOLED"
