"""A workstation moves studies to a destination AE (dcmtk movescu → the node's mover → dcmtk storescp)."""

from __future__ import annotations

import itertools
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, JPEGBaseline8Bit, generate_uid

from tests.factory import COMPRESSED_SAMPLES, SampleFile, compressed_copy, dataset_start, make_image, save
from tests.destinations import StoreScp
from tests.node import Node
from tests.peers import dcmtk_env, dcmtk_tool, push_files
from tests.stored import stored_object

WORKSTATION = "WORKSTATION"


def movescu(node: Node, destination: str, keys: dict[str, str],
            calling_aet: str = WORKSTATION) -> subprocess.CompletedProcess[str]:
    command = [dcmtk_tool("movescu"), "-v", "-S", "-aet", calling_aet, "-aec", node.ae_title, "-aem", destination]
    for keyword, value in keys.items():
        command += ["-k", f"{keyword}={value}"]
    command += ["127.0.0.1", str(node.dicom_port)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=dcmtk_env())


def register(node: Node, name: str, ae_title: str, port: int, allow: list[str]) -> None:
    response = httpx.put(f"{node.api}/api/modalities/{name}", timeout=10, json={
        "ae_title": ae_title, "host": "127.0.0.1", "port": port, "allow": allow})
    assert response.status_code in (200, 201), response.text


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[StoreScp]:
    receiver = StoreScp(tmp_path)
    yield receiver
    receiver.stop()


_archives = itertools.count(1)


def push_and_index(node: Node, files: list[SampleFile]) -> None:
    """Push new instances and wait until they are indexed, on top of what the module's node already holds."""
    expected = node.settled_status()["counts"]["instances"] + len(files)
    push_files(node.dicom_port, files)
    node.wait_indexed(expected)


@pytest.fixture
def archive(module_node: Node, tmp_path: Path, destination: StoreScp) -> Node:
    """The module's node with a study of 12 instances of its own (own patient ID and accession number), and this
    test's destination registered (replacing whatever an earlier test registered under that name)."""
    number = next(_archives)
    register(module_node, "workstation", WORKSTATION, 104, ["echo", "find", "move"])
    register(module_node, "destination", destination.ae_title, destination.port, ["store"])
    study, series = generate_uid(), generate_uid()
    patient_id, accession_number = f"P-MOVE-{number}", f"ACC-MOVE-{number}"
    datasets = [make_image(CTImageStorage, study, series, patient_id=patient_id, instance_number=n + 1)
                for n in range(12)]
    for dataset in datasets:
        dataset.AccessionNumber = accession_number
    files = [SampleFile(save(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm"), "1.2.840.10008.1.2.1", ds.SOPInstanceUID)
             for ds in datasets]
    push_and_index(module_node, files)
    module_node.study_uid = study  # type: ignore[attr-defined]
    module_node.patient_id = patient_id  # type: ignore[attr-defined]
    module_node.accession_number = accession_number  # type: ignore[attr-defined]
    return module_node


def test_a_study_moves_to_the_destination_byte_identical_and_as_the_nodes_ae_title(
    archive: Node, destination: StoreScp
) -> None:
    result = movescu(archive, destination.ae_title, {"QueryRetrieveLevel": "STUDY",
                                                      "StudyInstanceUID": archive.study_uid})  # type: ignore[attr-defined]
    output = result.stdout + result.stderr
    assert "Received Final Move Response (Success)" in output, output
    received = destination.received()
    assert len(received) == 12
    for sop_uid, dataset in received.items():
        stored = stored_object(archive.data_dir, sop_uid).read_bytes()
        assert dataset == stored[dataset_start(stored):]
    calling = re.findall(r"Calling Application Name:[ \t]+(\S+)", destination.log.read_text())
    assert calling and set(calling) == {"PACS"}  # sub-operations use the node's own AE title


def test_a_move_that_matches_nothing_succeeds_with_no_suboperations(archive: Node, destination: StoreScp) -> None:
    for keys in ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.3.4.5.6.7.8.9"},
                 {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}):
        result = movescu(archive, destination.ae_title, keys)
        assert "Received Final Move Response (Success)" in result.stdout + result.stderr
    assert destination.received() == {}


def test_a_caller_not_allowed_to_move_is_refused_and_nothing_is_sent(archive: Node, destination: StoreScp) -> None:
    register(archive, "query-only", "QUERYONLY", 104, ["echo", "find"])
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": archive.study_uid}  # type: ignore[attr-defined]
    for caller in ("QUERYONLY", "STRANGER"):
        result = movescu(archive, destination.ae_title, keys, calling_aet=caller)
        assert "Received Final Move Response (Unknown Status: 0x124)" in result.stdout + result.stderr, caller
    assert destination.received() == {}


def test_a_destination_that_is_down_fails_every_suboperation_and_a_reissued_move_completes(
        archive: Node, tmp_path: Path) -> None:
    absent = StoreScp(tmp_path, "LATER")
    absent.stop()  # registered, but nothing listens on its port
    register(archive, "later", absent.ae_title, absent.port, ["store"])
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": archive.study_uid}  # type: ignore[attr-defined]
    result = movescu(archive, absent.ae_title, keys)
    output = result.stdout + result.stderr
    assert "Received Final Move Response (Refused: OutOfResourcesSubOperations)" in output, output  # 0xA702
    [job] = archive.get("/api/jobs?limit=1").json()["jobs"]
    assert (job["kind"], job["completed"], job["failed"]) == ("c-move", 0, 12)

    restarted = StoreScp(tmp_path / "again", "LATER", port=absent.port)
    try:
        result = movescu(archive, restarted.ae_title, keys)
        output = result.stdout + result.stderr
        assert "Received Final Move Response (Success)" in output, output
        assert len(restarted.received()) == 12
    finally:
        restarted.stop()


def test_an_unknown_destination_gets_a801(archive: Node) -> None:
    result = movescu(archive, "NOWHERE", {"QueryRetrieveLevel": "STUDY",
                                          "StudyInstanceUID": archive.study_uid})  # type: ignore[attr-defined]
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in result.stdout + result.stderr


def test_compressed_instances_are_transcoded_for_a_destination_that_accepts_only_uncompressed(
    archive: Node, tmp_path: Path
) -> None:
    study, series = generate_uid(), generate_uid()
    samples = [compressed_copy(sample, tmp_path, study, series, archive.patient_id)  # type: ignore[attr-defined]
               for sample in COMPRESSED_SAMPLES]
    push_and_index(archive, samples)
    plain = StoreScp(tmp_path, "PLAIN", accept_compressed=False)
    try:
        register(archive, "plain", "PLAIN", plain.port, ["store"])
        result = movescu(archive, "PLAIN", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study})
        assert "Received Final Move Response (Success)" in result.stdout + result.stderr, result.stdout
        received = {re.sub(r"^[A-Z]+\.", "", path.name): path for path in plain.out.iterdir()}
        assert sorted(received) == sorted(sample.sop_instance_uid for sample in samples), (received, samples)
        for sample in samples:
            original = pydicom.dcmread(sample.path)
            original.decompress()
            got = pydicom.dcmread(received[sample.sop_instance_uid])
            assert not got.file_meta.TransferSyntaxUID.is_compressed
            assert got.pixel_array.tobytes() == original.pixel_array.tobytes()
    finally:
        plain.stop()


def test_an_instance_that_cannot_be_transcoded_is_reported_failed_never_completed(
    archive: Node, tmp_path: Path
) -> None:
    broken = make_image(CTImageStorage, patient_id="P-BROKEN")
    broken.PixelData = encapsulate([b"\xff\xd8 this is no JPEG \xff\xd9"])
    broken["PixelData"].VR = "OB"
    path = save(broken, tmp_path / "broken.dcm", JPEGBaseline8Bit)
    push_and_index(archive, [SampleFile(path, JPEGBaseline8Bit, broken.SOPInstanceUID)])
    plain = StoreScp(tmp_path, "PLAIN", accept_compressed=False)
    try:
        register(archive, "plain", "PLAIN", plain.port, ["store"])
        result = movescu(archive, "PLAIN", {"QueryRetrieveLevel": "STUDY",
                                            "StudyInstanceUID": broken.StudyInstanceUID})
        output = result.stdout + result.stderr
        # 0xA702: every sub-operation failed (nothing is reported completed when nothing arrived)
        assert "Received Final Move Response (Refused: OutOfResourcesSubOperations)" in output, output
        assert list(plain.out.iterdir()) == []
        with sqlite3.connect(archive.data_dir / "index.sqlite3") as connection:  # this move's job: the latest
            job_id, *job = connection.execute(
                "SELECT id, state, total, completed, failed FROM jobs ORDER BY created_at DESC LIMIT 1").fetchone()
            failed = connection.execute("SELECT sop_instance_uid FROM job_items WHERE job_id = ? AND state = 'failed'",
                                        (job_id,)).fetchall()
        assert job == ["done", 1, 0, 1] and failed == [(broken.SOPInstanceUID,)]
    finally:
        plain.stop()


def test_a_move_by_patient_id_or_accession_number_at_study_level(archive: Node, destination: StoreScp) -> None:
    by_patient = movescu(archive, destination.ae_title, {"QueryRetrieveLevel": "STUDY",
                                                         "PatientID": archive.patient_id})  # type: ignore[attr-defined]
    assert "Received Final Move Response (Success)" in by_patient.stdout + by_patient.stderr
    assert len(destination.received()) == 12
    by_accession = movescu(archive, destination.ae_title, {
        "QueryRetrieveLevel": "STUDY", "AccessionNumber": archive.accession_number})  # type: ignore[attr-defined]
    assert "Received Final Move Response (Success)" in by_accession.stdout + by_accession.stderr


@pytest.mark.parametrize("wait", [pytest.param(0.0, id="at-once"), pytest.param(1.5, id="after-one-poll")])
def test_a_destination_changed_over_rest_is_used_by_the_next_move_without_a_restart(
        archive: Node, destination: StoreScp, tmp_path: Path, wait: float) -> None:
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": archive.study_uid}  # type: ignore[attr-defined]
    first = movescu(archive, destination.ae_title, keys)
    assert "Received Final Move Response (Success)" in first.stdout + first.stderr
    assert len(destination.received()) == 12
    moved = StoreScp(tmp_path / "moved", destination.ae_title)  # the same AE title, now on another port
    try:
        answer = httpx.put(f"{archive.api}/api/modalities/destination", timeout=10, json={
            "ae_title": moved.ae_title, "host": "127.0.0.1", "port": moved.port, "allow": ["store"],
            "local_ae_title": "PACS_OUT"})
        assert answer.status_code == 200, answer.text  # replaced
        time.sleep(wait)
        result = movescu(archive, moved.ae_title, keys)  # no restart
        assert "Received Final Move Response (Success)" in result.stdout + result.stderr, result.stdout + result.stderr
        assert len(moved.received()) == 12
        calling = re.findall(r"Calling Application Name:[ \t]+(\S+)", moved.log.read_text())
        assert calling and set(calling) == {"PACS_OUT"}  # the entry's local AE title, also read live
    finally:
        moved.stop()
