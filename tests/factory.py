"""Test DICOM data, generated with pydicom (plus the real compressed samples in tests/data/)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UID,
    UltrasoundImageStorage,
    generate_uid,
)

DATA_DIR = Path(__file__).with_name("data")
COMPRESSED_SAMPLES = sorted(DATA_DIR.glob("*.dcm"))
UNCOMPRESSED_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
                         DeflatedExplicitVRLittleEndian)
SOP_CLASSES = (CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage, UltrasoundImageStorage)
MODALITY_OF = {CTImageStorage: "CT", MRImageStorage: "MR", SecondaryCaptureImageStorage: "OT",
               UltrasoundImageStorage: "US"}


def make_image(
    sop_class_uid: str = CTImageStorage,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    patient_id: str = "PID-0001",
    patient_name: str = "Test^Patient",
    charset: str | None = None,
    instance_number: int = 1,
    rows: int = 16,
    columns: int = 16,
) -> Dataset:
    """A small valid image of the given SOP class (16-bit monochrome pixels)."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyDate = "20261126"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC1"
    ds.Modality = MODALITY_OF.get(sop_class_uid, "OT")
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.StudyDescription = "Test study"
    ds.SeriesDescription = "Test series"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((i * 7) % 256 for i in range(rows * columns * 2))
    return ds


def with_file_meta(ds: Dataset, transfer_syntax: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    return ds


def save(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    with_file_meta(ds, transfer_syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def encode_dataset(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """The dataset part (no File Meta) in the given transfer syntax, as an SCU would send it."""
    syntax = UID(transfer_syntax)
    buffer = DicomBytesIO()
    buffer.is_little_endian = syntax.is_little_endian
    buffer.is_implicit_VR = syntax.is_implicit_VR
    write_dataset(buffer, ds)
    encoded = buffer.getvalue()
    if syntax == DeflatedExplicitVRLittleEndian:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        encoded = compressor.compress(encoded) + compressor.flush()
    return encoded


def dataset_start(file_bytes: bytes) -> int:
    """Offset of the dataset in a Part-10 file (after preamble and File Meta)."""
    meta_length = int.from_bytes(file_bytes[140:144], "little")
    return 144 + meta_length


def dataset_bytes_of_file(path: Path) -> bytes:
    data = path.read_bytes()
    return data[dataset_start(data):]


@dataclass(frozen=True)
class SampleFile:
    path: Path
    transfer_syntax: str
    sop_instance_uid: str


def compressed_copy(sample: Path, out_dir: Path, study_uid: str, series_uid: str, patient_id: str) -> SampleFile:
    """A real compressed sample with new identifying UIDs and patient (pixel data bytes untouched)."""
    ds = pydicom.dcmread(sample)
    ds.PatientID = patient_id
    ds.PatientName = "Test^Patient"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = out_dir / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return SampleFile(path, str(ds.file_meta.TransferSyntaxUID), ds.SOPInstanceUID)


def study_set(out_dir: Path, count: int, patient_id: str = "PID-SET") -> list[SampleFile]:
    """``count`` instances across SOP classes and every family of transfer syntax, in a few studies."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[SampleFile] = []
    studies = [generate_uid() for _ in range(4)]
    series = {study: [generate_uid() for _ in range(3)] for study in studies}
    for index in range(count):
        study_uid = studies[index % len(studies)]
        series_uid = series[study_uid][index % 3]
        kind = index % (len(UNCOMPRESSED_SYNTAXES) + len(COMPRESSED_SAMPLES))
        if kind < len(UNCOMPRESSED_SYNTAXES):
            syntax = UNCOMPRESSED_SYNTAXES[kind]
            ds = make_image(SOP_CLASSES[index % len(SOP_CLASSES)], study_uid, series_uid,
                            patient_id=patient_id, patient_name="Test^Patient", instance_number=index + 1)
            path = save(ds, out_dir / f"{ds.SOPInstanceUID}.dcm", syntax)
            files.append(SampleFile(path, syntax, ds.SOPInstanceUID))
        else:
            sample = COMPRESSED_SAMPLES[kind - len(UNCOMPRESSED_SYNTAXES)]
            files.append(compressed_copy(sample, out_dir, study_uid, series_uid, patient_id))
    return files


def uncompressed_set(out_dir: Path, count: int, transfer_syntax: str = ExplicitVRLittleEndian) -> list[SampleFile]:
    """``count`` small CT instances of one study and series, all in one transfer syntax."""
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    for index in range(count):
        ds = make_image(CTImageStorage, study_uid, series_uid, instance_number=index + 1)
        files.append(SampleFile(save(ds, out_dir / f"{ds.SOPInstanceUID}.dcm", transfer_syntax), transfer_syntax,
                              ds.SOPInstanceUID))
    return files


def deeply_nested_dataset(depth: int) -> bytes:
    """A dataset (Explicit VR Little Endian) whose ContentSequence nests ``depth`` levels deep, written as a
    hostile sender would: undefined lengths, so that the nesting costs the sender nothing."""
    dataset = make_image()
    del dataset.PixelData
    opening = bytes.fromhex("4000 30A7") + b"SQ\x00\x00" + b"\xff" * 4 + bytes.fromhex("FEFF 00E0") + b"\xff" * 4
    leaf = bytes.fromhex("0800 0001") + b"SH" + (4).to_bytes(2, "little") + b"LEAF"
    closing = bytes.fromhex("FEFF 0DE0") + b"\x00" * 4 + bytes.fromhex("FEFF DDE0") + b"\x00" * 4
    return encode_dataset(dataset, ExplicitVRLittleEndian) + opening * depth + leaf + closing * depth
