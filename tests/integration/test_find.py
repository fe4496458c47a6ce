"""A workstation queries the node with dcmtk's findscu (Study Root and Patient Root)."""

from __future__ import annotations

import subprocess
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from shared.dicom.requestor import keep_reactor_off_responses
from tests.factory import SampleFile, make_image, save
from tests.node import Node, wait_until
from tests.peers import dcmtk_env, dcmtk_tool, push_files

WORKSTATION = "WORKSTATION"


def findscu(node: Node, workdir: Path, keys: dict[str, str], model: str = "-S",
            calling_aet: str = WORKSTATION) -> tuple[subprocess.CompletedProcess[str], list[Dataset]]:
    out = workdir / f"find-{len(list(workdir.glob('find-*')))}"
    out.mkdir(parents=True)
    command = [dcmtk_tool("findscu"), "-v", model, "-aet", calling_aet, "-aec", node.ae_title, "-X", "-od", str(out)]
    for keyword, value in keys.items():
        command += ["-k", f"{keyword}={value}" if value else keyword]
    command += ["127.0.0.1", str(node.dicom_port)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=dcmtk_env())
    return result, [pydicom.dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "LOCAL", meaning
    return item


@pytest.fixture(scope="module")
def archive(module_node: Node, tmp_path_factory: pytest.TempPathFactory) -> Node:
    """A node holding two studies, which the tests that share it query and never change."""
    registered = httpx.put(f"{module_node.api}/api/modalities/workstation", json={
        "ae_title": WORKSTATION, "host": "127.0.0.1", "port": 104, "allow": ["echo", "find"]}, timeout=10)
    assert registered.status_code in (200, 201), registered.text
    folder = tmp_path_factory.mktemp("archive")
    study, other = generate_uid(), generate_uid()
    series = generate_uid()
    datasets = [make_image(CTImageStorage, study, series, patient_id="P-1", patient_name="Müller^Jürgen",
                           charset="ISO_IR 100", instance_number=n + 1) for n in range(3)]
    for dataset in datasets:
        dataset.StudyDate = "20240110"
        dataset.ProcedureCodeSequence = [code_item("CTHEAD", "CT head"), code_item("CTNECK", "CT neck")]
    datasets.append(make_image(MRImageStorage, other, patient_id="P-2", patient_name="Doe^John"))
    datasets[-1].StudyDate = "20250301"
    files = [SampleFile(save(ds, folder / f"{ds.SOPInstanceUID}.dcm"), "1.2.840.10008.1.2.1", ds.SOPInstanceUID)
             for ds in datasets]
    push_files(module_node.dicom_port, files)
    module_node.wait_indexed(4)
    module_node.study_uid = study  # type: ignore[attr-defined]
    return module_node


def test_study_level_query_returns_the_requested_keys_and_computed_counts(archive: Node, tmp_path: Path) -> None:
    result, responses = findscu(archive, tmp_path, {
        "QueryRetrieveLevel": "STUDY", "PatientID": "P-1", "PatientName": "", "StudyInstanceUID": "",
        "NumberOfStudyRelatedInstances": "", "ModalitiesInStudy": "", "InstitutionName": ""})
    assert result.returncode == 0, result.stderr
    assert len(responses) == 1
    [study] = responses
    assert study.StudyInstanceUID == archive.study_uid  # type: ignore[attr-defined]
    assert str(study.PatientName) == "Müller^Jürgen"
    assert study.NumberOfStudyRelatedInstances == 3
    assert study.ModalitiesInStudy == "CT"
    assert "InstitutionName" in study and not study.InstitutionName
    assert "StudyDate" not in study  # only what was asked


def test_patient_name_is_case_insensitive_and_a_utf8_answer_says_so(archive: Node, tmp_path: Path) -> None:
    _, responses = findscu(archive, tmp_path, {"QueryRetrieveLevel": "PATIENT", "PatientName": "müller*",
                                               "SpecificCharacterSet": "ISO_IR 192"}, model="-P")
    assert [str(r.PatientName) for r in responses] == ["Müller^Jürgen"]
    assert responses[0].SpecificCharacterSet == "ISO_IR 192"


def test_image_level_and_date_range(archive: Node, tmp_path: Path) -> None:
    _, images = findscu(archive, tmp_path, {"QueryRetrieveLevel": "IMAGE",
                                            "StudyInstanceUID": archive.study_uid,  # type: ignore[attr-defined]
                                            "SOPInstanceUID": "", "InstanceNumber": ""})
    assert sorted(int(image.InstanceNumber) for image in images) == [1, 2, 3]
    _, studies = findscu(archive, tmp_path, {"QueryRetrieveLevel": "STUDY", "StudyDate": "20250101-",
                                             "PatientID": ""})
    assert [study.PatientID for study in studies] == ["P-2"]


def test_a_level_outside_the_model_is_refused(archive: Node, tmp_path: Path) -> None:
    result, responses = findscu(archive, tmp_path, {"QueryRetrieveLevel": "PATIENT", "PatientID": ""}, model="-S")
    assert responses == []
    assert "Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in result.stdout + result.stderr  # 0xA900


def test_an_unregistered_caller_may_not_query(archive: Node, tmp_path: Path) -> None:
    result, responses = findscu(archive, tmp_path, {"QueryRetrieveLevel": "STUDY", "PatientID": ""},
                                calling_aet="STRANGER")
    assert responses == []
    assert "Final Find Response (Unknown Status: 0x124)" in result.stdout + result.stderr  # Refused: Not Authorized


def test_a_sequence_key_matches_an_item_and_answers_only_the_matching_items_asked_keys(
        archive: Node, tmp_path: Path) -> None:
    result, [study] = findscu(archive, tmp_path, {
        "QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
        "ProcedureCodeSequence[0].CodeValue": "CTNECK", "ProcedureCodeSequence[0].CodeMeaning": ""})
    assert result.returncode == 0, result.stderr
    assert study.StudyInstanceUID == archive.study_uid  # type: ignore[attr-defined]
    [item] = study.ProcedureCodeSequence
    assert (item.CodeValue, item.CodeMeaning) == ("CTNECK", "CT neck")
    assert "CodingSchemeDesignator" not in item
    _, none = findscu(archive, tmp_path, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
                                          "ProcedureCodeSequence[0].CodeValue": "MRKNEE"})
    assert none == []


def test_patient_names_ignore_accents_once_configured(archive: Node, tmp_path: Path) -> None:
    keys = {"QueryRetrieveLevel": "STUDY", "PatientName": "MULLER*", "PatientID": ""}
    assert findscu(archive, tmp_path, keys)[1] == []
    changed = httpx.patch(f"{archive.api}/api/config", json={"patient_name_ignore_accents": True}, timeout=10)
    assert changed.status_code == 200, changed.text
    try:
        wait_until(lambda: findscu(archive, tmp_path, keys)[1], 10, "accent-insensitive matching")
        assert [study.PatientID for study in findscu(archive, tmp_path, keys)[1]] == ["P-1"]
    finally:  # the node is shared: put the setting back
        httpx.patch(f"{archive.api}/api/config", json={"patient_name_ignore_accents": False}, timeout=10)
    wait_until(lambda: findscu(archive, tmp_path, keys)[1] == [], 10, "accent-sensitive matching again")


def test_c_cancel_ends_a_running_query_with_fe00(embedded_node: Node, tmp_path: Path) -> None:
    """The C-CANCEL follows the C-FIND at once (PS3.7 9.3.2.3: any time after the request), so it is usually read
    before the query starts: the query ends with Cancel, not with all its answers. (pynetdicom drops a C-CANCEL that
    arrives before it serves the request: 9 of 10 runs ended with Success before services.scp.find noted it. A
    findscu that cancels after its first answer raced the query instead: on a loaded machine all 300 answers went
    out before it was scheduled again.)"""
    registered = httpx.put(f"{embedded_node.api}/api/modalities/workstation", json={
        "ae_title": WORKSTATION, "host": "127.0.0.1", "port": 104, "allow": ["find"]}, timeout=10)
    assert registered.status_code in (200, 201), registered.text
    study = generate_uid()
    files = []
    for number in range(300):
        dataset = make_image(CTImageStorage, study, instance_number=number + 1)
        files.append(SampleFile(save(dataset, tmp_path / f"{number}.dcm"), "1.2.840.10008.1.2.1",
                                dataset.SOPInstanceUID))
    push_files(embedded_node.dicom_port, files)
    embedded_node.wait_indexed(300)
    identifier = Dataset()
    identifier.QueryRetrieveLevel, identifier.StudyInstanceUID, identifier.SOPInstanceUID = "IMAGE", study, ""
    ae = AE(ae_title=WORKSTATION)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, ExplicitVRLittleEndian)
    association = ae.associate("127.0.0.1", embedded_node.dicom_port, ae_title=embedded_node.ae_title)
    assert association.is_established
    try:
        keep_reactor_off_responses(association)  # the answers are read here, one by one
        context_id = association.accepted_contexts[0].context_id
        request = C_FIND()
        request.MessageID, request.Priority = 9, 2
        request.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
        request.Identifier = BytesIO(encode(identifier, False, True))
        association.dimse.send_msg(request, context_id)
        association.send_c_cancel(9, context_id)
        statuses = []
        while not statuses or statuses[-1] in (0xFF00, 0xFF01):
            _, response = association.dimse.get_msg(block=True)
            assert response is not None, f"no final response after {len(statuses)} answers"
            assert response.MessageIDBeingRespondedTo == 9
            statuses.append(int(response.Status))
    finally:
        association.release()
    assert statuses[-1] == 0xFE00  # Matching terminated due to Cancel request
    assert len(statuses) - 1 < 300  # pending answers before it


CHARSET_NAMES = [
    ("ISO_IR 100", "Müller^Jürgen"),
    ("ISO_IR 126", "Διονυσιος^Γεωργιος"),
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동"),
    ("GB18030", "Wang^XiaoDong=王^小东"),
]


def test_names_in_every_character_set_are_found_by_queries_in_their_own_set_and_in_utf8(
        embedded_node: Node, tmp_path: Path) -> None:
    registered = httpx.put(f"{embedded_node.api}/api/modalities/workstation", json={
        "ae_title": WORKSTATION, "host": "127.0.0.1", "port": 104, "allow": ["find"]}, timeout=10)
    assert registered.status_code in (200, 201), registered.text
    files = []
    for number, (charset, name) in enumerate(CHARSET_NAMES):
        dataset = make_image(CTImageStorage, charset=charset, patient_name=name,  # type: ignore[arg-type]
                             patient_id=f"CS-{number}")
        files.append(SampleFile(save(dataset, tmp_path / f"{number}.dcm"), "1.2.840.10008.1.2.1",
                                dataset.SOPInstanceUID))
    push_files(embedded_node.dicom_port, files)
    embedded_node.wait_indexed(len(files))

    ae = AE(ae_title=WORKSTATION)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    association = ae.associate("127.0.0.1", embedded_node.dicom_port, ae_title=embedded_node.ae_title)
    assert association.is_established
    keep_reactor_off_responses(association)
    try:
        for number, (charset, name) in enumerate(CHARSET_NAMES):
            for query_charset in (charset, "ISO_IR 192"):
                identifier = Dataset()
                identifier.SpecificCharacterSet = query_charset
                identifier.QueryRetrieveLevel = "STUDY"
                identifier.PatientName = name.upper()  # case-insensitive
                identifier.PatientID = ""
                answers = [found for status, found in association.send_c_find(
                    identifier, StudyRootQueryRetrieveInformationModelFind) if status and status.Status == 0xFF00]
                assert [(str(found.PatientName), found.PatientID) for found in answers] == [
                    (name, f"CS-{number}")], (charset, query_charset)
                assert answers[0].SpecificCharacterSet == "ISO_IR 192"
    finally:
        association.release()
