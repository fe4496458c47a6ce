"""Query parameters and DICOM JSON of DICOMweb answers, and the Part-10 parts of STOW-RS (no node)."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from starlette.requests import Request

from services.api.dicomweb.dicomjson import UnknownAttribute, element, keyword_of, without_bulk
from services.api.dicomweb.qido import parse_query
from services.api.dicomweb.stow import Refused, split_part10
from shared.query.sequences import SequenceKey
from tests.factory import encode_dataset, make_image, with_file_meta


def request(query: str) -> Request:
    return Request({"type": "http", "query_string": query.encode(), "headers": []})


def test_attribute_names_are_keywords_or_tags() -> None:
    assert keyword_of("PatientID") == keyword_of("00100020") == keyword_of("00100020 ") == "PatientID"
    for bad in ("NoSuchKeyword", "0010002", "ZZZZZZZZ", "patientid"):
        with pytest.raises(UnknownAttribute):
            keyword_of(bad)


def test_index_values_become_dicom_json() -> None:
    assert element("PatientName", "Yamada^Tarou=山田^太郎") == {
        "vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}]}
    assert element("SeriesNumber", 3) == {"vr": "IS", "Value": [3]}
    assert element("SliceThickness", "1.25") == {"vr": "DS", "Value": [1.25]}
    assert element("ModalitiesInStudy", ["CT", "MR"]) == {"vr": "CS", "Value": ["CT", "MR"]}
    assert element("StudyDescription", "") == {"vr": "LO"}
    assert element("PatientName", None) == {"vr": "PN"}


def test_bulk_data_left_out_by_the_indexer_is_dropped_also_inside_sequences() -> None:
    stored = {"00081140": {"vr": "SQ", "Value": [{"00420011": {"vr": "OB", "BulkDataURI": ""},
                                                  "00080018": {"vr": "UI", "Value": ["1.2"]}}]},
              "7FE00010": {"vr": "OW", "BulkDataURI": ""}, "00100020": {"vr": "LO", "Value": ["X"]}}
    assert without_bulk(stored) == {"00081140": {"vr": "SQ", "Value": [{"00080018": {"vr": "UI", "Value": ["1.2"]}}]},
                                    "00100020": {"vr": "LO", "Value": ["X"]}}


def test_query_parameters() -> None:
    values, included, everything = parse_query(request(
        "StudyInstanceUID=1.2,1.3&00100010=doe*&Modality=CT&Modality=MR&limit=5&offset=2&fuzzymatching=false"
        "&includefield=StudyDescription,00080080&includefield=RequestAttributesSequence.RequestedProcedureID"))
    assert values == {"StudyInstanceUID": "1.2\\1.3", "PatientName": "doe*", "Modality": "CT\\MR"}
    assert included == ["StudyDescription", "InstitutionName", "RequestAttributesSequence"]
    assert not everything
    values, _, everything = parse_query(request(
        "RequestAttributesSequence.RequestedProcedureID=RP1&0040A370.00080050=A1&includefield=all"))
    assert everything
    assert values == {"RequestAttributesSequence": SequenceKey((("RequestedProcedureID", "RP1"),)),
                      "ReferencedRequestSequence": SequenceKey((("AccessionNumber", "A1"),))}


def part10(syntax: str, preamble: bool = True) -> bytes:
    ds = with_file_meta(make_image(), syntax)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=preamble)
    return buffer.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("preamble", [True, False])
def test_parts_are_split_into_file_meta_and_dataset(syntax: str, preamble: bool) -> None:
    data = part10(syntax, preamble)
    found, sop_class, sop_instance, offset = split_part10(data)
    assert found == syntax and sop_class and sop_instance
    assert data[offset:].startswith(encode_dataset(make_image(), syntax)[:4])  # (0008,0016) first


def test_a_part_without_file_meta_cannot_be_understood() -> None:
    with pytest.raises(Refused) as refused:
        split_part10(encode_dataset(make_image()))
    assert refused.value.reason == 0xC000
