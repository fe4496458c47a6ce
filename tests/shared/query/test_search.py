"""PS3.4 C.2.2.2 matching at each level, over an index filled by the real indexing code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from shared.query.search import Query, TooManyMatches, run_query
from shared.query.sequences import SequenceKey
from shared.runtime import Runtime
from tests.archive import ingest, open_archive
from tests.factory import make_image


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Runtime]:
    runtime = open_archive(tmp_path)
    doe_study, roe_study, empty_name_study = generate_uid(), generate_uid(), generate_uid()
    ct_series, mr_series = generate_uid(), generate_uid()
    datasets = []
    for number in range(3):
        ds = make_image(CTImageStorage, doe_study, ct_series, patient_id="P-DOE", patient_name="Doe^John",
                        instance_number=number + 1)
        ds.StudyDate, ds.StudyTime, ds.InstitutionName = "20240115", "101500", "General Hospital"
        ds.ProcedureCodeSequence = [code("CTHEAD", "CT head"), code("CTNECK", "CT neck")]
        datasets.append(ds)
    ds = make_image(MRImageStorage, doe_study, mr_series, patient_id="P-DOE", patient_name="Doe^John")
    ds.StudyDate, ds.SeriesNumber = "20240115", 2
    datasets.append(ds)
    ds = make_image(CTImageStorage, roe_study, patient_id="P-ROE", patient_name="Röe^Jane", charset="ISO_IR 100")
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20250301", "230000", "ACC-ROE"
    ds.ProcedureCodeSequence = [code("CTCHEST", "CT chest")]
    datasets.append(ds)
    ds = make_image(CTImageStorage, empty_name_study, patient_id="P-NONAME", patient_name="")
    ds.StudyDate, ds.StudyTime = "", ""
    datasets.append(ds)
    ingest(runtime, datasets)
    runtime.doe_study = doe_study  # type: ignore[attr-defined]
    yield runtime
    runtime.close()


def code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "LOCAL", meaning
    return item


def find(runtime: Runtime, level: str, ignore_accents: bool = False, **values: object) -> list[dict[str, object]]:
    with runtime.sessions() as session:
        return run_query(session, Query(level=level, values=dict(values), requested=list(values),
                                        ignore_accents=ignore_accents))


def patient_ids(rows: list[dict[str, object]]) -> list[object]:
    return sorted(str(row["PatientID"]) for row in rows)


def test_a_patient_level_query_returns_each_patient_once(archive: Runtime) -> None:
    assert patient_ids(find(archive, "PATIENT", PatientID=None)) == ["P-DOE", "P-NONAME", "P-ROE"]


def test_single_value_matching_is_exact(archive: Runtime) -> None:
    assert patient_ids(find(archive, "STUDY", PatientID="P-DOE")) == ["P-DOE"]
    assert find(archive, "STUDY", PatientID="P-DO") == []


def test_patient_name_matches_case_insensitively_and_a_lone_star_matches_empty_names(archive: Runtime) -> None:
    assert patient_ids(find(archive, "STUDY", PatientName="DOE^JOHN")) == ["P-DOE"]
    assert patient_ids(find(archive, "STUDY", PatientName="röe*")) == ["P-ROE"]
    assert patient_ids(find(archive, "STUDY", PatientName="*")) == ["P-DOE", "P-NONAME", "P-ROE"]
    assert patient_ids(find(archive, "STUDY", PatientName="?oe^*")) == ["P-DOE"]  # not accent-insensitive


def test_patient_name_can_also_ignore_accents(archive: Runtime) -> None:
    assert find(archive, "STUDY", PatientName="ROE^JANE") == []
    assert patient_ids(find(archive, "STUDY", ignore_accents=True, PatientName="ROE^JANE")) == ["P-ROE"]
    assert patient_ids(find(archive, "STUDY", ignore_accents=True, PatientName="röe*")) == ["P-ROE"]
    assert patient_ids(find(archive, "STUDY", ignore_accents=True, PatientName="?oe^*")) == ["P-DOE", "P-ROE"]


def test_wildcards_do_not_treat_sql_characters_specially(archive: Runtime) -> None:
    assert find(archive, "STUDY", PatientID="P%") == []
    assert find(archive, "STUDY", PatientID="P_DOE") == []
    assert patient_ids(find(archive, "STUDY", PatientID="P?DOE")) == ["P-DOE"]


def test_date_and_time_ranges_with_open_ends(archive: Runtime) -> None:
    assert patient_ids(find(archive, "STUDY", StudyDate="20240101-20241231")) == ["P-DOE"]
    assert patient_ids(find(archive, "STUDY", StudyDate="20250101-")) == ["P-ROE"]
    assert patient_ids(find(archive, "STUDY", StudyDate="-20250301")) == ["P-DOE", "P-ROE"]
    assert patient_ids(find(archive, "STUDY", StudyTime="10-11")) == ["P-DOE"]
    assert patient_ids(find(archive, "STUDY", StudyTime="2300")) == []  # single value: exact


def test_a_list_of_uids_matches_any_of_them(archive: Runtime) -> None:
    doe = archive.doe_study  # type: ignore[attr-defined]
    many = [generate_uid() for _ in range(10)] + [doe]
    assert len("\\".join(many)) > 256
    rows = find(archive, "STUDY", StudyInstanceUID=many)
    assert [row["StudyInstanceUID"] for row in rows] == [doe]


def test_series_and_image_levels_and_relational_higher_keys(archive: Runtime) -> None:
    doe = archive.doe_study  # type: ignore[attr-defined]
    series = find(archive, "SERIES", StudyInstanceUID=doe, Modality=None, SeriesNumber=None)
    assert sorted(row["Modality"] for row in series) == ["CT", "MR"]
    assert [row["Modality"] for row in find(archive, "SERIES", StudyInstanceUID=doe, SeriesNumber="2")] == ["MR"]
    images = find(archive, "IMAGE", StudyInstanceUID=doe, Modality="CT", InstanceNumber=None)
    assert sorted(row["InstanceNumber"] for row in images) == [1, 2, 3]


def test_computed_keys(archive: Runtime) -> None:
    doe = archive.doe_study  # type: ignore[attr-defined]
    [study] = find(archive, "STUDY", StudyInstanceUID=doe, NumberOfStudyRelatedSeries=None,
                   NumberOfStudyRelatedInstances=None, ModalitiesInStudy=None, SOPClassesInStudy=None)
    assert study["NumberOfStudyRelatedSeries"] == 2
    assert study["NumberOfStudyRelatedInstances"] == 4
    assert study["ModalitiesInStudy"] == ["CT", "MR"]
    assert study["SOPClassesInStudy"] == sorted([CTImageStorage, MRImageStorage])
    [patient] = find(archive, "PATIENT", PatientID="P-DOE", NumberOfPatientRelatedStudies=None,
                     NumberOfPatientRelatedSeries=None, NumberOfPatientRelatedInstances=None)
    assert (patient["NumberOfPatientRelatedStudies"], patient["NumberOfPatientRelatedSeries"],
            patient["NumberOfPatientRelatedInstances"]) == (1, 2, 4)


def test_modalities_in_study_matches_any_listed_modality(archive: Runtime) -> None:
    assert patient_ids(find(archive, "STUDY", ModalitiesInStudy="MR")) == ["P-DOE"]
    assert patient_ids(find(archive, "STUDY", ModalitiesInStudy=["US", "MR"])) == ["P-DOE"]


def test_keys_outside_the_index_are_matched_and_answered_from_stored_attributes(archive: Runtime) -> None:
    rows = find(archive, "STUDY", InstitutionName="General*")
    assert patient_ids(rows) == ["P-DOE"]
    assert rows[0]["_attributes"]["00080080"]["Value"] == ["General Hospital"]


def test_a_result_limit_refuses_instead_of_flooding(archive: Runtime) -> None:
    with archive.sessions() as session, pytest.raises(TooManyMatches):
        run_query(session, Query(level="IMAGE", values={"SOPInstanceUID": None}, limit=3))


def test_a_sequence_key_matches_when_one_stored_item_matches_every_item_key(archive: Runtime) -> None:
    assert patient_ids(find(archive, "STUDY", ProcedureCodeSequence=SequenceKey((("CodeValue", "CTNECK"),)))) == [
        "P-DOE"]
    assert patient_ids(find(archive, "STUDY", ProcedureCodeSequence=SequenceKey((("CodeValue", "CTC*"),)))) == [
        "P-ROE"]
    both_in_one_item = SequenceKey((("CodeValue", "CTHEAD"), ("CodeMeaning", "CT neck")))
    assert find(archive, "STUDY", ProcedureCodeSequence=both_in_one_item) == []


def test_a_universal_sequence_key_matches_everything_and_answers_the_matching_items_reduced(
        archive: Runtime) -> None:
    assert len(find(archive, "STUDY", ProcedureCodeSequence=SequenceKey())) == 3
    assert len(find(archive, "STUDY", ProcedureCodeSequence=SequenceKey((("CodeValue", None),)))) == 3
    key = SequenceKey((("CodeValue", "CTNECK"), ("CodeMeaning", None), ("CodingSchemeVersion", None)))
    [row] = find(archive, "STUDY", ProcedureCodeSequence=key)
    stored = row["_attributes"]["00081032"]  # type: ignore[index]
    assert key.answer(stored) == {"vr": "SQ", "Value": [{
        "00080100": {"vr": "SH", "Value": ["CTNECK"]}, "00080104": {"vr": "LO", "Value": ["CT neck"]},
        "00080103": {"vr": "SH"}}]}
