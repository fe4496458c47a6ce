"""Orthanc as a real peer: it stores to the node, queries it, asks it to move a study to Orthanc, and receives
a REST send; every exchange is Orthanc's own DICOM code talking to ours. The tests share one node (module_node),
each with an Orthanc of its own."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from tests.factory import SampleFile, make_image, save
from tests.node import Node, wait_until
from tests.orthanc import ORTHANC_AET, OrthancPeer
from tests.peers import push_files


@pytest.fixture
def orthanc(module_node: Node, tmp_path: Path) -> Iterator[OrthancPeer]:
    peer = OrthancPeer(tmp_path / "orthanc", module_node.ae_title, module_node.dicom_port).start()
    registered = httpx.put(f"{module_node.api}/api/modalities/orthanc", json={
        "ae_title": ORTHANC_AET, "host": "127.0.0.1", "port": peer.dicom_port,
        "allow": ["echo", "store", "find", "move", "get"]}, timeout=10)
    assert registered.status_code in (200, 201), registered.text
    try:
        yield peer
    finally:
        peer.stop()
        print(peer.log()[-3000:])


def push_study(node: Node, workdir: Path, count: int, patient_id: str, patient_name: str,
               sop_class: str = CTImageStorage, charset: str | None = None) -> tuple[str, dict[str, str]]:
    """Store one study through storescu; return its UID and SOP Instance UID → sha256 of its pixel data."""
    study, series = generate_uid(), generate_uid()
    files, hashes = [], {}
    for number in range(count):
        dataset = make_image(sop_class, study, series, patient_id=patient_id, patient_name=patient_name,
                             charset=charset, instance_number=number + 1)
        path = save(dataset, workdir / f"{dataset.SOPInstanceUID}.dcm")
        files.append(SampleFile(path, "1.2.840.10008.1.2.1", dataset.SOPInstanceUID))
        hashes[dataset.SOPInstanceUID] = hashlib.sha256(dataset.PixelData).hexdigest()
    push_files(node.dicom_port, files)
    return study, hashes


def test_orthanc_queries_the_node_at_every_level(module_node: Node, orthanc: OrthancPeer, tmp_path: Path) -> None:
    held = module_node.settled_status()["counts"]["instances"]
    study, _ = push_study(module_node, tmp_path, 3, "ORTH-1", "Müller^Jürgen", charset="ISO_IR 100")
    push_study(module_node, tmp_path, 1, "ORTH-2", "Doe^John", sop_class=MRImageStorage)
    module_node.wait_indexed(held + 4)

    [patient] = orthanc.query_node("Patient", {"PatientID": "ORTH-1", "PatientName": ""})
    assert patient["PatientName"] == "Müller^Jürgen"
    [found] = orthanc.query_node("Study", {"PatientName": "müller*", "StudyInstanceUID": "",
                                           "ModalitiesInStudy": "", "NumberOfStudyRelatedInstances": ""})
    assert found["StudyInstanceUID"] == study
    assert found["NumberOfStudyRelatedInstances"] == "3"
    [series] = orthanc.query_node("Series", {"StudyInstanceUID": study, "SeriesInstanceUID": "",
                                             "Modality": ""})
    assert series["Modality"] == "CT"
    instances = orthanc.query_node("Instance", {"StudyInstanceUID": study,
                                                "SeriesInstanceUID": series["SeriesInstanceUID"],
                                                "SOPInstanceUID": "", "InstanceNumber": ""})
    assert sorted(int(instance["InstanceNumber"]) for instance in instances) == [1, 2, 3]
    assert orthanc.query_node("Study", {"PatientID": "NOBODY"}) == []


def test_orthanc_asks_the_node_to_move_a_study_to_orthanc(
        module_node: Node, orthanc: OrthancPeer, tmp_path: Path) -> None:
    held = module_node.settled_status()["counts"]["instances"]
    study, hashes = push_study(module_node, tmp_path, 20, "ORTH-3", "Roe^Jane")
    module_node.wait_indexed(held + 20)

    orthanc.post("/modalities/pacs/move", {"Level": "Study", "Resources": [{"StudyInstanceUID": study}],
                                           "TargetAet": ORTHANC_AET, "Timeout": 60})
    assert orthanc.study_instance_uids() == {study}
    received = {}
    for orthanc_id in orthanc.get("/instances"):
        part10 = httpx.get(f"{orthanc.url}/instances/{orthanc_id}/file", timeout=30).content
        dataset = pydicom.dcmread(BytesIO(part10))
        received[dataset.SOPInstanceUID] = hashlib.sha256(dataset.PixelData).hexdigest()
    assert received == hashes


def test_orthanc_stores_to_the_node_and_the_node_sends_back_over_rest(
        module_node: Node, orthanc: OrthancPeer, tmp_path: Path) -> None:
    dataset = make_image(CTImageStorage, patient_id="ORTH-4", patient_name="Peer^Stored")
    uploaded = httpx.post(f"{orthanc.url}/instances", content=save(dataset, tmp_path / "up.dcm").read_bytes(),
                          timeout=30)
    assert uploaded.status_code == 200, uploaded.text
    orthanc_id = uploaded.json()["ID"]
    held = module_node.settled_status()["counts"]["instances"]
    orthanc.post("/modalities/pacs/store", {"Resources": [orthanc_id], "Synchronous": True})
    module_node.wait_indexed(held + 1)
    stored = httpx.get(f"{module_node.api}/api/instances/{dataset.SOPInstanceUID}", timeout=10).json()
    assert stored["remote_aet"] == ORTHANC_AET

    httpx.delete(f"{orthanc.url}/instances/{orthanc_id}", timeout=30).raise_for_status()
    assert orthanc.instance_count() == 0
    sent = httpx.post(f"{module_node.api}/api/modalities/orthanc/store",
                      json={"studies": [dataset.StudyInstanceUID]}, timeout=30)
    assert sent.status_code == 202, sent.text
    job = wait_until(lambda: (body := httpx.get(f"{module_node.api}{sent.headers['location']}",
                                                timeout=10).json())["finished_at"] and body, 60, "the send")
    assert (job["state"], job["completed"], job["failed"]) == ("done", 1, 0)
    assert orthanc.study_instance_uids() == {dataset.StudyInstanceUID}
