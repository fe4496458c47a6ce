"""A C-FIND answer encoded by hand is byte for byte what pydicom writes for the same data set."""

from __future__ import annotations

import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.dsutils import encode

from services.scp.find_answer import FindAnswer, Integer, Text, encode_answer, stored_value, text_of

PATIENT_NAME, PATIENT_ID, STUDY_UID, MODALITIES, SERIES_COUNT = 0x00100010, 0x00100020, 0x0020000D, 0x00080061, \
    0x00201206
ROWS, INSTITUTION, PROCEDURE_CODES = 0x00280010, 0x00080080, 0x00081032


def code_item() -> DataElement:
    item = Dataset()
    item.CodeValue = "CT-HEAD"
    item.CodingSchemeDesignator = "LOCAL"
    return DataElement(PROCEDURE_CODES, "SQ", Sequence([item]))


def reference(answer: FindAnswer, implicit_vr: bool) -> bytes:
    dataset = answer.as_dataset()
    if not answer.is_ascii:
        dataset.SpecificCharacterSet = "ISO_IR 192"
    return bytes(encode(dataset, implicit_vr, True))


ANSWERS = {
    "ascii": [(PATIENT_NAME, "PN", text_of("DOE^JOHN")), (PATIENT_ID, "LO", text_of("P1")),
              (STUDY_UID, "UI", text_of("1.2.3.4.5")), (MODALITIES, "CS", text_of(["CT", "MR"])),
              (SERIES_COUNT, "IS", text_of(3)), (ROWS, "US", Integer(512))],
    "empty keys": [(PATIENT_NAME, "PN", None), (PATIENT_ID, "LO", text_of("")), (PROCEDURE_CODES, "SQ", None)],
    "not ascii": [(PATIENT_NAME, "PN", text_of("Müller^Jürgen=山田^太郎")), (INSTITUTION, "LO", text_of("Hôpital"))],
    "sequence from the stored attributes": [(PATIENT_ID, "LO", text_of("P2")), (PROCEDURE_CODES, "SQ", code_item())],
}


@pytest.mark.parametrize("implicit_vr", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("name", list(ANSWERS))
def test_the_answer_is_what_pydicom_writes(name: str, implicit_vr: bool) -> None:
    answer = FindAnswer(list(ANSWERS[name]))
    assert answer.encode(implicit_vr) == reference(answer, implicit_vr)


def test_an_answer_that_is_not_ascii_says_utf8_first() -> None:
    answer = FindAnswer(list(ANSWERS["not ascii"]))
    assert not answer.is_ascii
    assert answer.encode(True).startswith(bytes.fromhex("08000500") + (10).to_bytes(4, "little") + b"ISO_IR 192")
    assert b"ISO_IR 192" not in FindAnswer(list(ANSWERS["ascii"])).encode(True)


def test_big_endian_and_other_data_sets_go_to_pynetdicom() -> None:
    answer = FindAnswer(list(ANSWERS["ascii"]))
    assert encode_answer(answer, False, False) == bytes(encode(answer.as_dataset(), False, False))
    plain = Dataset()
    plain.PatientID = "P9"
    assert encode_answer(plain, True, True) == bytes(encode(plain, True, True))


def test_stored_text_attributes_are_text_and_the_rest_is_left_to_pydicom() -> None:
    assert stored_value("LO", {"vr": "LO", "Value": ["St. Mary"]}) == Text(("St. Mary",))
    assert stored_value("PN", {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]}) == Text(("DOE^JANE",))
    assert stored_value("DS", {"vr": "DS", "Value": [1.5]}) is None
    assert stored_value("OB", {"vr": "OB", "InlineBinary": "AAAA"}) is None
