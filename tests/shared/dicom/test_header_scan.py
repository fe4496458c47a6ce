"""The header scan reads the same values as pydicom, or says it cannot (and pydicom decides)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless

from shared.dicom import header_scan
from shared.ingest_identify import UnreadableDataset, _read_header, _scanned_headers, identify, identity_of
from shared.uids import InvalidUID
from tests.factory import encode_dataset, make_image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")

SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
WANTED = frozenset({0x00080016, SOP_INSTANCE_UID, 0x0020000D, 0x0020000E, 0x00100020, 0x00200013})


def with_sequences(dataset: Dataset) -> Dataset:
    """Sequences before the identifying elements: nested, empty, and an item holding private elements."""
    inner = Dataset()
    inner.CodeValue = "X"
    inner.ContentSequence = Sequence([Dataset()])
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.3"
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.add_new(0x00091010, "LO", "private value")
    item.ConceptNameCodeSequence = Sequence([inner, Dataset()])
    dataset.ReferencedImageSequence = Sequence([item, Dataset()])
    dataset.ProcedureCodeSequence = Sequence([])
    dataset.add_new(0x00091001, "UN", b"\x01\x02\x03\x04")
    return dataset


def undefined_lengths(dataset: Dataset) -> Dataset:
    for element in dataset.iterall():
        if element.VR == "SQ":
            element.is_undefined_length = True
            for item in element.value:
                item.is_undefined_length_sequence_item = True
    return dataset


def written(dataset: Dataset, transfer_syntax: str) -> bytes:
    return encode_dataset(dataset, transfer_syntax)


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless])
@pytest.mark.parametrize("shape", ["plain", "sequences", "undefined lengths"])
def test_the_scan_reads_what_pydicom_reads(transfer_syntax: str, shape: str) -> None:
    dataset = make_image(patient_id="PID 17", instance_number=42)
    if shape != "plain":
        dataset = with_sequences(dataset)
    if shape == "undefined lengths":
        dataset = undefined_lengths(dataset)
    encoded = written(dataset, ExplicitVRLittleEndian if transfer_syntax == JPEGLSLossless else transfer_syntax)
    scanned = _scanned_headers(encoded, transfer_syntax != ImplicitVRLittleEndian)
    assert scanned is not None
    reference = _read_header(encoded, ExplicitVRLittleEndian if transfer_syntax == JPEGLSLossless
                             else transfer_syntax)  # pydicom
    assert identity_of(scanned) == identity_of(reference)
    assert set(scanned) == set(reference)


def test_an_undefined_length_un_sequence_holds_implicit_vr_content() -> None:
    item = b"".join([
        b"\x08\x00\x50\x11" + (8).to_bytes(4, "little") + b"1.2.3.4\x00",  # implicit VR inside
        b"\xfe\xff\x0d\xe0\x00\x00\x00\x00",  # item delimitation
    ])
    un = (b"\x09\x00\x10\x10UN\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + item
          + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    uid = b"\x20\x00\x0d\x00UI\x06\x001.2.3\x00"
    assert header_scan.scan(un + uid, True, WANTED, 0x00200013) == {STUDY_INSTANCE_UID: b"1.2.3\x00"}


@pytest.mark.parametrize("damage", [
    b"\x08\x00\x18\x00UI\xff\x00" + b"1.2.3",  # a value longer than the data
    b"\x08\x00\x18\x00QQ\x04\x001.23",  # an unknown VR
    b"\x08\x00\x18\x00OB\x00\x00\xff\xff\xff\xff1.23",  # an undefined length outside a sequence
    b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff" + b"\x08\x00\x18\x00UI\x04\x001.23",  # a sequence without items
    b"\x08\x00\x18",  # a header cut short
])
def test_anything_unusual_is_left_to_pydicom(damage: bytes) -> None:
    with pytest.raises(header_scan.NotPlain):
        header_scan.scan(damage, True, WANTED, 0x00200013)


@pytest.mark.parametrize("value", ["ÄBC", "A\\B"])
def test_non_ascii_or_multi_valued_values_are_left_to_pydicom(value: str) -> None:
    dataset = make_image(patient_id=value, charset="ISO_IR 100")
    assert _scanned_headers(written(dataset, ExplicitVRLittleEndian), True) is None


TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patient_id=TEXT, instance_number=st.one_of(TEXT, st.integers(-5, 10**6).map(str)),
       sop_uid=st.one_of(st.from_regex(r"[12]\.[0-9]{1,20}(\.[0-9]{1,8}){0,3}", fullmatch=True), TEXT),
       implicit=st.booleans(), sequences=st.booleans(), undefined=st.booleans())
@example(patient_id="", instance_number="INFINITY", sop_uid="1.2", implicit=False, sequences=True, undefined=True)
def test_identify_answers_as_pydicom_does(patient_id: str, instance_number: str, sop_uid: str, implicit: bool,
                                          sequences: bool, undefined: bool) -> None:
    """The same identity when pydicom reads one; a refusal when pydicom refuses."""
    dataset = make_image(patient_id=patient_id)
    dataset.SOPInstanceUID = sop_uid
    if sequences:
        dataset = with_sequences(dataset)
    if undefined:
        dataset = undefined_lengths(dataset)
    raw = instance_number.encode() + b" " * (len(instance_number) % 2)  # as sent, even when pydicom would refuse it
    dataset[0x00200013] = RawDataElement(Tag(0x00200013), "IS", len(raw), raw, 0, implicit, True)
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    try:
        encoded = written(dataset, syntax)
    except (ValueError, OverflowError):
        assume(False)  # pydicom would not write it; a modality could, but then there is no reference to compare
    try:
        reference: object = identity_of(_read_header(encoded, syntax))
    except Exception:
        reference = None  # refused
    try:
        fast: object = identify(encoded, syntax)
    except (InvalidUID, UnreadableDataset):
        fast = None
    assert fast == reference
