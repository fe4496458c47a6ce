"""extract(): what the index keeps of a stored Part-10 object, with text decoded to Unicode."""

from __future__ import annotations

import hashlib
from pathlib import Path
import random

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

from services.indexer.extract import NO_PATIENT_ID_PREFIX, UnindexableObject, extract
from shared.dicom.part10 import encode_part10
from tests.factory import UNCOMPRESSED_SYNTAXES, encode_dataset, make_image

PIXEL_DATA = "7FE00010"


def part10(dataset: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    return encode_part10(encode_dataset(dataset, transfer_syntax), dataset.SOPClassUID, dataset.SOPInstanceUID,
                         transfer_syntax)


@pytest.mark.parametrize("transfer_syntax", UNCOMPRESSED_SYNTAXES)
def test_the_index_fields_are_read_in_every_transfer_syntax(transfer_syntax: str) -> None:
    dataset = make_image(MRImageStorage, patient_id="PID-42", patient_name="Doe^Jane", instance_number=7)
    data = part10(dataset, transfer_syntax)
    record = extract(data)
    assert (record.patient_key, record.patient_id, record.patient_name) == ("PID-42", "PID-42", "Doe^Jane")
    assert (record.patient_birth_date, record.patient_sex) == ("19700101", "O")
    assert (record.study_instance_uid, record.series_instance_uid, record.sop_instance_uid) == (
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID)
    assert (record.sop_class_uid, record.transfer_syntax) == (MRImageStorage, transfer_syntax)
    assert (record.study_date, record.study_time, record.accession_number, record.study_id) == (
        "20261126", "101500", "ACC1", "1")
    assert (record.modality, record.series_number, record.instance_number) == ("MR", 1, 7)
    assert (record.study_description, record.series_description, record.body_part_examined) == (
        "Test study", "Test series", "CHEST")
    assert record.referring_physician_name == "Referrer^Rita"
    assert (record.size, record.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_a_stored_file_is_read_as_a_stream_with_the_same_record(tmp_path: Path) -> None:
    """Large objects are indexed from a file, hashed a chunk at a time and parsed up to the pixel data."""
    data = part10(make_image(rows=1024, columns=1024))  # 2 MiB: two hash chunks
    path = tmp_path / "object.dcm"
    path.write_bytes(data)
    with path.open("rb") as stream:
        assert extract(stream) == extract(data)


def test_names_are_decoded_with_the_specific_character_set() -> None:
    name = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    dataset = make_image(charset=["", "ISO 2022 IR 87"], patient_name=name)  # type: ignore[arg-type]
    record = extract(part10(dataset))
    assert record.patient_name == name
    assert record.patient_name_search == name.casefold()
    assert record.specific_character_set == "\\ISO 2022 IR 87"


def test_latin1_names_are_decoded_and_searchable() -> None:
    record = extract(part10(make_image(charset="ISO_IR 100", patient_name="Müller^Jürgen")))
    assert (record.patient_name, record.patient_name_search) == ("Müller^Jürgen", "muller^jurgen")


def test_non_bulk_attributes_are_kept_as_dicom_json() -> None:
    record = extract(part10(make_image(patient_id="PID-7")))
    assert record.attributes["00100020"] == {"vr": "LO", "Value": ["PID-7"]}
    assert record.attributes["00100010"]["Value"] == [{"Alphabetic": "Test^Patient"}]


def test_bulk_data_is_left_out_of_the_attributes() -> None:
    dataset = make_image(rows=64, columns=64)  # 8 KiB of pixels
    dataset.add_new(0x00090010, "LO", "TEST CREATOR")
    dataset.add_new(0x00091001, "OB", bytes(4096))  # large binary value
    dataset.add_new(0x00091002, "OB", b"\x01\x02")  # small binary value
    attributes = extract(part10(dataset, ExplicitVRBigEndian)).attributes
    assert PIXEL_DATA not in attributes or "InlineBinary" not in attributes[PIXEL_DATA]
    assert "InlineBinary" not in attributes["00091001"]
    assert "InlineBinary" in attributes["00091002"]


@pytest.mark.parametrize("patient_id", [None, ""])
def test_a_missing_patient_id_gets_a_patient_key_of_its_own_study(patient_id: str | None) -> None:
    dataset = make_image()
    if patient_id is None:
        del dataset.PatientID
    else:
        dataset.PatientID = patient_id
    record = extract(part10(dataset, DeflatedExplicitVRLittleEndian))
    assert record.patient_id == ""
    assert record.patient_key == NO_PATIENT_ID_PREFIX + dataset.StudyInstanceUID


def test_studies_without_patient_id_never_share_a_patient_key() -> None:
    first, second = (extract(part10(make_image(patient_id=""))) for _ in range(2))
    assert first.patient_key != second.patient_key


@pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")
@pytest.mark.parametrize("data", [b"", b"garbage" * 100, random.Random(3).randbytes(8192),
                                  b"\x00" * 128 + b"DICM" + b"\xff" * 64])
def test_garbage_bytes_are_unindexable(data: bytes) -> None:
    with pytest.raises(UnindexableObject):
        extract(data)


@pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")
def test_an_object_with_an_invalid_uid_is_unindexable() -> None:
    dataset = make_image()
    dataset.SeriesInstanceUID = "../../x"
    with pytest.raises(UnindexableObject):
        extract(encode_part10(encode_dataset(dataset), dataset.SOPClassUID, dataset.SOPInstanceUID,
                              ExplicitVRLittleEndian))
